"""Issue 18: reconstruct commands skip an unreadable file with a one-line reason, write the rest and exit 3;
a 16-bit grey PNG loads as the shard path loads it (not white); wrong models, sizes and devices end in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_flextok_training import tiny as tiny_flextok  # tests/ is on sys.path

from tokenforge import codes_file, hub
from tokenforge.cli import main as tokenforge_main
from tokenforge.errors import EXIT_FAILED, EXIT_OK, EXIT_SOME_SKIPPED, UsageError
from tokenforge.reconstruct import main as reconstruct_main  # raises UsageError (tokenforge.cli prints it)

pytestmark = pytest.mark.usefixtures("one_thread")
GOOD = ("coffee.png", "camera.png", "china.jpg")  # colour PNG, grey PNG, JPEG


@pytest.fixture(scope="module")
def vqgan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
    from tokenforge.tokenizers.vqgan.model import VQGAN

    torch.manual_seed(0)
    vqgan = VQGAN(VectorQuantizer(16, 4), ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=4,
                  attn_last_level=False, attn_mid=False)
    return hub.save_pretrained(vqgan.eval(), tmp_path_factory.mktemp("vqgan") / "model")


@pytest.fixture
def folder(tmp_path: Path, shared_data: Path) -> Path:
    """Three real photos, a JPEG cut in half and a text file named .png."""
    images = tmp_path / "images"
    images.mkdir()
    for name in GOOD:
        shutil.copy(shared_data / "images" / name, images / name)
    data = (shared_data / "images" / "flower.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (images / "notes.png").write_text("not an image\n")
    return images


def skipped_lines(err: str) -> dict[str, str]:
    lines = [line[len("skipped: "):] for line in err.splitlines() if line.startswith("skipped: ")]
    return dict(line.split(": ", 1) for line in lines)


def test_generic_reconstruct_skips_unreadable_images_and_writes_the_rest(vqgan_dir: Path, folder: Path,
                                                                        tmp_path: Path, capsys) -> None:
    out = tmp_path / "rec"
    code = tokenforge_main(["reconstruct", "--model", str(vqgan_dir), str(folder), "--out", str(out),
                            "--size", "32", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == EXIT_SOME_SKIPPED
    reasons = skipped_lines(err)
    assert set(reasons) == {"truncated.jpg", "notes.png"}
    assert reasons["truncated.jpg"].startswith("corrupt or truncated image")
    assert reasons["notes.png"] == "not an image PIL can identify"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["files"]) == set(GOOD)
    assert {k: v.split(": ", 1)[1] for k, v in metrics["skipped"].items()} == reasons
    assert all(np.isfinite(f["psnr_db"]) for f in metrics["files"].values())
    for name in GOOD:  # input | reconstruction, 32 x 64
        assert Image.open(out / f"{Path(name).stem}.png").size == (64, 32)
    assert Image.open(out / "grid.png").size == (64, 3 * 32)
    assert tokenforge_main(["reconstruct", "--model", str(vqgan_dir), str(folder / "coffee.png"), "--out",
                            str(tmp_path / "one"), "--size", "32", "--device", "cpu"]) == EXIT_OK
    # every input unreadable: nothing was written, so the run failed (exit 1), each reason still on stderr
    assert tokenforge_main(["reconstruct", "--model", str(vqgan_dir), str(folder / "truncated.jpg"),
                            str(folder / "notes.png"), "--out", str(tmp_path / "none"), "--size", "32",
                            "--device", "cpu"]) == EXIT_FAILED
    assert set(skipped_lines(capsys.readouterr().err)) == {"truncated.jpg", "notes.png"}


def test_flextok_reconstruct_skips_unreadable_images_and_writes_the_rest(folder: Path, tmp_path: Path,
                                                                        capsys) -> None:
    model = hub.save_pretrained(tiny_flextok(), tmp_path / "flextok")
    out = tmp_path / "rec"
    code = tokenforge_main(["reconstruct", "--model", str(model), str(folder), "--out", str(out), "--tokens",
                            "1,8", "--size", "16", "--steps", "2", "--device", "cpu"])
    assert code == EXIT_SOME_SKIPPED
    assert set(skipped_lines(capsys.readouterr().err)) == {"truncated.jpg", "notes.png"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["files"]) == set(GOOD) and set(metrics["skipped"]) == {"truncated.jpg", "notes.png"}
    assert all(np.isfinite(v) for v in metrics["mean"].values())
    assert Image.open(out / "coffee.png").size == (3 * 16, 16)  # input, k=1, k=8


def test_16_bit_grey_png_loads_as_the_shard_path_loads_it(shared_data: Path, tmp_path: Path, vqgan_dir: Path) -> None:
    from tokenforge.data.image import Decoder, prepare
    from tokenforge.reconstruct import load_image

    grey = np.asarray(Image.open(shared_data / "images" / "camera.png").convert("L"), dtype=np.uint16)
    path = tmp_path / "camera16.png"
    Image.fromarray(grey * 257).save(path)  # the full 16-bit range: 0..65535
    assert Image.open(path).mode in {"I;16", "I"}
    size = 64
    loaded = load_image(path, size)
    sample = prepare(path, max_side=None, format="png", quality=95, min_side=8)[0]
    shard = Decoder(image_size=size, train=False)({"png": sample["png"]})["image"]
    assert torch.equal(loaded, shard)
    assert torch.equal(loaded, load_image(shared_data / "images" / "camera.png", size))  # /257 is exact here
    assert float((loaded >= 1.0).float().mean()) < 0.05 and -0.5 < float(loaded.mean()) < 0.5  # not white
    # and through the command: the input half of the written pair is the camera crop, not a white square
    out = tmp_path / "rec"
    assert tokenforge_main(["reconstruct", "--model", str(vqgan_dir), str(path), "--out", str(out),
                            "--size", str(size), "--device", "cpu"]) == EXIT_OK
    pair = np.asarray(Image.open(out / "camera16.png"))
    expected = ((shard.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    assert np.abs(pair[:, :size].astype(int) - expected.astype(int)).max() <= 1


def test_a_generator_checkpoint_is_named_as_such(tmp_path: Path, shared_data: Path) -> None:
    from test_autoregressive_gpt import tiny_gpt

    gpt = hub.save_pretrained(tiny_gpt(), tmp_path / "gpt")
    with pytest.raises(UsageError, match="is a generator .*tokenforge generate --generator") as error:
        reconstruct_main(["--model", str(gpt), str(shared_data / "images" / "coffee.png"),
                         "--out", str(tmp_path / "rec"), "--device", "cpu"])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("size", ["0", "20", "32"])
def test_flextok_refuses_a_size_it_cannot_take(size: str, tmp_path: Path, shared_data: Path) -> None:
    model = hub.save_pretrained(tiny_flextok(), tmp_path / "flextok")  # VAE factor 2 x patch 2, 4x4 grid: 4..16
    with pytest.raises(UsageError, match=f"--size {size}") as error:
        reconstruct_main(["--model", str(model), str(shared_data / "images/coffee.png"),
                          "--out", str(tmp_path / "rec"), "--size", size, "--tokens", "1", "--device", "cpu"])
    assert "\n" not in str(error.value)
    assert not (tmp_path / "rec" / "metrics.json").exists()


def test_device_cuda_without_a_gpu_is_one_line(monkeypatch, vqgan_dir: Path, shared_data: Path,
                                               tmp_path: Path) -> None:
    from tokenforge.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_device(None) == torch.device("cpu") == resolve_device("auto")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(UsageError, match="no CUDA GPU is visible.*--device cpu"):
            resolve_device(name)
    with pytest.raises(UsageError, match="not a device torch knows"):
        resolve_device("gpu0")
    with pytest.raises(UsageError, match="no CUDA GPU"):
        reconstruct_main(["--model", str(vqgan_dir), str(shared_data / "images/coffee.png"),
                          "--out", str(tmp_path / "rec"), "--device", "cuda"])


def test_audio_encode_and_decode_skip_bad_files_and_go_on(fixtures_dir: Path, shared_data: Path, tmp_path: Path,
                                                         capsys) -> None:
    model = hub.save_pretrained(hub.from_official("wavtokenizer", fixtures_dir / "wavtokenizer"), tmp_path / "wt")
    clips = tmp_path / "clips"
    clips.mkdir()
    good = sorted((shared_data / "speech24k").glob("*.flac"))[0]
    shutil.copy(good, clips / good.name)
    (clips / "notes.wav").write_text("not audio\n")
    codes = tmp_path / "codes"
    assert tokenforge_main(["encode", "--model", str(model), str(clips), "--out", str(codes),
                            "--device", "cpu"]) == EXIT_SOME_SKIPPED
    assert sorted(p.name for p in codes.iterdir()) == [f"{good.stem}.codes.npz"]
    tokens, header = codes_file.read(codes / f"{good.stem}.codes.npz")
    tokens.ids[0, :3] = torch.tensor([0, 1, 10**6])
    codes_file.write(codes / "range.codes.npz", tokens, header)
    (codes / "broken.codes.npz").write_bytes(b"PK garbage")
    capsys.readouterr()
    assert tokenforge_main(["decode", "--model", str(model), str(codes), "--out", str(tmp_path / "wav"),
                            "--device", "cpu"]) == EXIT_SOME_SKIPPED
    reasons = skipped_lines(capsys.readouterr().err)
    assert set(reasons) == {"range.codes.npz", "broken.codes.npz"}
    assert reasons["range.codes.npz"].startswith("token ids must be in [0, ")
    assert reasons["broken.codes.npz"].startswith("not a readable codes file")
    assert [p.name for p in (tmp_path / "wav").glob("*.flac")] == [f"{good.stem}.flac"]
