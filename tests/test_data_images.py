"""Image shards on real data: exact PNG round trip, broken inputs rejected or converted, the loader contract."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokenforge.data.cli import main as shards_main
from tokenforge.data.datamodule import ShardDataModule
from tokenforge.data.image import to_rgb
from tokenforge.data.shards import make_shards, shard_urls


def read_tars(folder: Path, split: str) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for url in shard_urls(folder, split):
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                assert ext not in samples.setdefault(key, {}), f"{key}.{ext} written twice"
                samples[key][ext] = tar.extractfile(member).read()
    return samples


@pytest.fixture(scope="module")
def photos(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Real photos (RGB and grey) plus 40 faces, via a CSV manifest with labels and captions."""
    src = tmp_path_factory.mktemp("src")
    rows = ["path,label,caption"]
    for name in ("chelsea.png", "camera.png", "coins.png", "china.jpg"):
        rows.append(f"{shared_data / 'images' / name},photo,a photo called {name.split('.')[0]}")
    for i in range(20):
        rows.append(f"{shared_data / 'images/faces' / f'face_{i:03d}.png'},face,")
        rows.append(f"{shared_data / 'images/faces' / f'nonface_{i:03d}.png'},nonface,")
    (src / "list.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path_factory.mktemp("shards")
    manifest = make_shards("images", src / "list.csv", out, val_fraction=0.25, shard_size=7, format="png",
                           progress=False)
    return out, manifest


def test_png_round_trip_is_exact_and_manifest_matches(photos: tuple[Path, dict], shared_data: Path) -> None:
    out, manifest = photos
    assert manifest["count"] == 44 and manifest["rejected"] == 0
    assert manifest["splits"]["val"]["count"] == 11 and manifest["splits"]["train"]["count"] == 33
    assert manifest["classes"] == ["face", "nonface", "photo"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["count"] == 44
    seen: list[str] = []
    for split in ("train", "val"):
        shards = on_disk["splits"][split]["shards"]
        assert [s["count"] for s in shards[:-1]] == [7] * (len(shards) - 1)
        samples = read_tars(out, split)
        assert sorted(samples) == sorted(on_disk["splits"][split]["keys"])
        seen += list(samples)
        for key, sample in samples.items():
            name = key.split("__")[-1]
            source = next(p for p in (shared_data / "images").rglob("*") if p.stem == name)
            expected = np.asarray(to_rgb(Image.open(source)))
            got = np.asarray(Image.open(io.BytesIO(sample["png"])))
            assert got.shape == expected.shape and got.dtype == np.uint8
            np.testing.assert_array_equal(got, expected)
            label = {"face": 0, "nonface": 1, "photo": 2}[name.split("_")[0] if "face" in name else "photo"]
            assert int(sample["cls"]) == label
            if label == 2:
                assert sample["txt"].decode() == f"a photo called {name}"
    assert len(seen) == len(set(seen)) == 44  # every accepted file exactly once across shards


def test_grey_is_replicated_to_rgb(shared_data: Path) -> None:
    grey = Image.open(shared_data / "images/camera.png")
    assert grey.mode == "L"
    rgb = np.asarray(to_rgb(grey))
    np.testing.assert_array_equal(rgb[..., 0], np.asarray(grey))
    np.testing.assert_array_equal(rgb[..., 2], np.asarray(grey))


def make_broken_images(src: Path, shared_data: Path) -> dict[str, str]:
    """Broken/awkward files; value = 'reject' or 'convert'."""
    photo = (shared_data / "images/chelsea.png").read_bytes()
    (src / "truncated.png").write_bytes(photo[: len(photo) // 3])
    (src / "zero.png").write_bytes(b"")
    (src / "png_named.jpg").write_bytes(photo)  # wrong extension: PIL reads the content
    Image.new("RGB", (1, 1), (255, 0, 0)).save(src / "tiny.png")
    sixteen = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    Image.fromarray(sixteen).save(src / "sixteen.png")  # stored as 16-bit grey
    Image.open(shared_data / "images/chelsea.png").convert("CMYK").save(src / "cmyk.jpg", quality=95)
    rgba = Image.new("RGBA", (32, 32), (0, 0, 255, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 16, 32))
    rgba.save(src / "transparent.png")
    palette = Image.open(shared_data / "images/coins.png").convert("P")
    palette.save(src / "palette.gif")
    (src / "text.jpg").write_text("this is not an image")
    return {"truncated": "reject", "zero": "reject", "png_named": "convert", "tiny": "reject",
            "sixteen": "convert", "cmyk": "convert", "transparent": "convert", "palette": "convert",
            "text": "reject"}


def test_broken_images_are_rejected_with_reason_or_converted(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    expected = make_broken_images(src, shared_data)
    manifest = make_shards("images", src, tmp_path / "out", format="png", progress=False)
    rejected = {Path(r["file"]).stem: r["reason"] for r in map(json.loads, (tmp_path / "out/rejected.jsonl").open())}
    assert set(rejected) == {k for k, v in expected.items() if v == "reject"}
    assert "0 bytes" in rejected["zero"] and "too small: 1x1" in rejected["tiny"]
    assert "truncat" in rejected["truncated"].lower() and "identify" in rejected["text"]
    samples = read_tars(tmp_path / "out", "train")
    assert set(samples) == {k for k, v in expected.items() if v == "convert"} and manifest["count"] == 5
    sixteen = np.asarray(Image.open(io.BytesIO(samples["sixteen"]["png"])))
    source = np.arange(64 * 48).reshape(48, 64) * 21
    np.testing.assert_array_equal(sixteen[..., 1], np.round(source / 257).astype(np.uint8))
    transparent = np.asarray(Image.open(io.BytesIO(samples["transparent"]["png"])))
    assert transparent[0, 0].tolist() == [255, 0, 0] and transparent[0, 31].tolist() == [255, 255, 255]
    cmyk = np.asarray(Image.open(io.BytesIO(samples["cmyk"]["png"]))).astype(float)
    chelsea = np.asarray(Image.open(shared_data / "images/chelsea.png").convert("RGB")).astype(float)
    assert cmyk.shape == chelsea.shape and np.abs(cmyk - chelsea).mean() < 6  # JPEG-in-CMYK, converted back


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    make_shards("images", tmp_path / "rotated.jpg", tmp_path / "out", format="png", progress=False)
    stored = np.asarray(Image.open(io.BytesIO(read_tars(tmp_path / "out", "train")["rotated"]["png"])))
    assert stored.shape == (40, 20, 3)
    assert stored[:8].mean() > 200 and stored[-8:].mean() < 50  # the strip is now at the top


def test_datamodule_batches_follow_the_contract(photos: tuple[Path, dict]) -> None:
    out, _ = photos
    dm = ShardDataModule(train=str(out), val=str(out), modality="image", batch_size=4, image_size=32,
                         epoch_samples=12, shuffle_buffer=8)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    for batch in batches:
        assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
        assert batch["image"].min() >= -1 and batch["image"].max() <= 1
        assert batch["cls"].dtype == torch.long and len(batch["__key__"]) == 4
    val_keys = [k for b in dm.val_dataloader() for k in b["__key__"]]
    again = [k for b in dm.val_dataloader() for k in b["__key__"]]
    assert val_keys == again and sorted(val_keys) == sorted(read_tars(out, "val"))
    first = next(iter(dm.val_dataloader()))
    second = next(iter(dm.val_dataloader()))
    assert torch.equal(first["image"], second["image"])  # deterministic validation: centre crop, no flip


def test_centre_crop_values_match_a_hand_computation(tmp_path: Path, shared_data: Path) -> None:
    make_shards("images", shared_data / "images/faces/face_000.png", tmp_path / "out", format="png", progress=False)
    dm = ShardDataModule(train=str(tmp_path / "out"), val=str(tmp_path / "out/train-000000.tar"), image_size=None)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    face = np.asarray(Image.open(shared_data / "images/faces/face_000.png")).astype(np.float32)
    assert batch["image"].shape == (1, 3, 25, 25)
    np.testing.assert_allclose(batch["image"][0, 1].numpy(), face / 127.5 - 1, atol=1e-6)


def test_corrupt_member_is_skipped_and_counted(photos: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = photos
    source = shard_urls(out, "train")[0]
    broken = tmp_path / "broken-000000.tar"
    with tarfile.open(source) as tar, tarfile.open(broken, "w") as dst:
        for i, member in enumerate(tar.getmembers()):
            data = tar.extractfile(member).read()
            if member.name.endswith(".png") and i < 6:
                data = data[:40]  # undecodable image bytes
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    dm = ShardDataModule(train=str(broken), val=str(broken), batch_size=2, image_size=16)
    dm.setup()
    with pytest.warns(UserWarning, match="skipped a corrupt sample"):
        keys = [k for b in dm.val_dataloader() for k in b["__key__"]]
    assert dm.skipped == 2 and len(keys) == 5
    # a truncated tar: the stream ends early, the reader warns and goes on
    cut = tmp_path / "cut-000000.tar"
    data = Path(source).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    dm = ShardDataModule(train=str(cut), val=f"{cut}", batch_size=2, image_size=16)
    dm.setup()
    with pytest.warns(UserWarning, match="skipped a corrupt sample") as caught:
        keys = [k for b in dm.val_dataloader() for k in b["__key__"]]
    assert sum("ReadError" in str(w.message) for w in caught) == 1
    # the read error, plus the sample whose members the cut split (when it split one): never fatal
    assert 1 <= dm.skipped <= 2
    order = [m.name.split(".")[0] for m in tarfile.open(source).getmembers()]
    assert 0 < len(keys) < 7 and keys == list(dict.fromkeys(order))[: len(keys)]  # the samples before the cut


def test_cli_make_images_with_folder_labels(tmp_path: Path, shared_data: Path) -> None:
    src = tmp_path / "tree"
    for cls, names in {"cats": ["chelsea.png"], "grey": ["camera.png", "moon.png"]}.items():
        (src / cls).mkdir(parents=True)
        for name in names:
            (src / cls / name).write_bytes((shared_data / "images" / name).read_bytes())
    code = shards_main(["make", "images", str(src), str(tmp_path / "out"), "--max-side", "64", "--quality", "90",
                        "--no-progress"])
    assert code == 0
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["classes"] == ["cats", "grey"] and manifest["count"] == 3
    samples = read_tars(tmp_path / "out", "train")
    assert {k: int(v["cls"]) for k, v in samples.items()} == {"cats__chelsea": 0, "grey__camera": 1, "grey__moon": 1}
    assert max(Image.open(io.BytesIO(samples["cats__chelsea"]["jpg"])).size) == 64
    assert shards_main(["make", "images", str(src), str(tmp_path / "out"), "--no-progress"]) == 2  # exists
