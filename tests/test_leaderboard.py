"""`tokenforge evaluate --models ...`: a leaderboard of tokenizers of one modality on the same held-out shards.

Tiny tokenizers built from the demo's configs (random weights, seeded) on shards of the bundled samples
(`tokenforge/samples`): rows, bytes per item, the numbers single-model evaluate gives, "unavailable" lines for
metrics without weights, refusals, the page (static checks, and in headless Chromium with the ``browser`` marker).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headless_chromium import chromium  # noqa: F401 (a fixture)

from tokenforge.config_models import build_model
from tokenforge.demo_stages import SAMPLES, Run, leaderboard_stage
from tokenforge.evaluate import evaluate_tokenizer
from tokenforge.evaluate_protocol import batches
from tokenforge.leaderboard import command as evaluate_main
from tokenforge.errors import UsageError
from tokenforge.hub import save_pretrained
from tokenforge.leaderboard import modality_of
from tokenforge.leaderboard_page import PALETTE

def tiny(method: str, out: Path) -> Path:
    """The method's tiny config with seeded random weights, saved as a model folder."""
    torch.manual_seed(0)
    save_pretrained(build_model(f"configs/tokenizers/{method}/tiny.yaml").eval(), out / method)
    return out / method


def shards(kind: str, files: list[Path], out: Path, **options) -> Path:
    from tokenforge.data.shards import make_shards

    listing = out / f"{kind}.csv"
    with open(listing, "w", newline="") as handle:
        csv.writer(handle).writerows([["path"], *[[str(f)] for f in files]])
    make_shards(kind, listing, out / kind, labels="none", val_fraction=0.5, seed=0, progress=False, **options)
    return out / kind


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Photo shards (4 held out) and tiny VQGAN, FlexTok (16 px) and KL autoencoder (continuous) models; the
    leaderboard of all three at 2 images each, with an empty $TOKENFORGE_HOME (no metric weights)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("leaderboard")
    photos = sorted(p for p in (SAMPLES / "images").iterdir() if p.suffix in {".png", ".jpg"})[:8]
    found = {"root": root, "shards": shards("images", photos, root, max_side=48, format="png")}
    found.update({name: tiny(name, root) for name in ("vqgan", "flextok", "klvae")})
    home = os.environ.get("TOKENFORGE_HOME")
    os.environ["TOKENFORGE_HOME"] = str(root / "home")
    try:
        code = evaluate_main(["--models", f"vq={found['vqgan']}", f"ft={found['flextok']}", f"kl={found['klvae']}",
                              "--shards", str(found["shards"]), "--image-size", "32", "16", "32", "--max-items", "2",
                              "--device", "cpu", "--out", str(root / "board"), "--no-progress"])
    finally:
        os.environ.pop("TOKENFORGE_HOME") if home is None else os.environ.update(TOKENFORGE_HOME=home)
    found.update(code=code, out=root / "board", table=json.loads((root / "board" / "leaderboard.json").read_text()))
    return found


def test_image_rows_bytes_and_single_model_numbers(images: dict) -> None:
    assert images["code"] == 0
    table = images["table"]
    assert table["modality"] == "image" and table["unit"] == "image"
    rows = {r["model"]: r for r in table["rows"]}
    assert list(rows) == ["vq", "ft", "kl"]
    assert [rows[m]["method"] for m in rows] == ["vqgan", "flextok", "klvae"]
    assert [rows[m]["image_size"] for m in rows] == [32, 16, 32]
    # bytes per image = codes x bits per code / 8: 8x8 ids of a 256-code book; FlexTok's 1D ids of its FSQ book;
    # the KL autoencoder's continuous latents at 16 bits (float16) each
    assert (rows["vq"]["codes_per_item"], rows["vq"]["bits_per_code"], rows["vq"]["bytes_per_item"]) == (64, 8, 64)
    ft = rows["ft"]
    assert ft["bits_per_code"] == pytest.approx(math.log2(ft["vocab_size"]))  # log2 of the FSQ book, not rounded
    assert ft["bytes_per_item"] == pytest.approx(ft["codes_per_item"] * ft["bits_per_code"] / 8)
    assert rows["kl"]["bits_per_code"] == 16 and rows["kl"]["bytes_per_item"] == rows["kl"]["codes_per_item"] * 2
    # each row holds exactly what single-model evaluate gives for that model
    single = evaluate_tokenizer(str(images["vqgan"]), images["shards"], images["root"] / "single", image_size=32,
                                max_items=2, progress=False)
    assert rows["vq"]["cells"]["psnr_db"] == single["psnr_db"]["mean"]
    assert rows["vq"]["cells"]["ssim"] == single["ssim"]["mean"]
    assert 3 < rows["vq"]["cells"]["psnr_db"] < 40 and -1 < rows["vq"]["cells"]["ssim"] < 1
    saved = json.loads((images["out"] / "models" / "vq" / "metrics.json").read_text())
    assert saved["psnr_db"] == single["psnr_db"] and saved["protocol"]["n_items"] == 2


def test_metrics_without_weights_say_what_is_missing(images: dict) -> None:
    for r in images["table"]["rows"]:
        for key in ("lpips", "rfid"):
            assert r["cells"][key].startswith("unavailable: "), (r["model"], key, r["cells"][key])
        variants = {k: v for k, v in r["cells"].items() if k.startswith("ssim_variants")}
        assert variants  # SSIM as other evaluations compute it, each variant labelled (or why there is none)
        for value in variants.values():
            assert value.startswith("unavailable: ") if isinstance(value, str) else -1 < value <= 1
    text = (images["out"] / "leaderboard.md").read_text()
    assert "| vq | vqgan | 32 | 64 | 8 | 64 |" in text and "unavailable [" in text
    assert re.search(r"^\[\d\] unavailable: ", text, re.M)  # the whole line once, under the table
    labels = [c["label"] for c in images["table"]["columns"]]
    assert labels[:2] == ["PSNR (dB)", "SSIM (reference)"] and all(f"- {label}: " in text for label in labels)
    assert all(re.fullmatch(r"SSIM \(\w+\)", c["label"]) for c in images["table"]["columns"]
               if c["key"].startswith("ssim_variants/"))
    rows = list(csv.reader(open(images["out"] / "leaderboard.csv")))
    assert rows[0][:6] == ["model", "method", "image_size", "codes_per_item", "bits_per_code", "bytes_per_item"]
    assert [r[0] for r in rows[1:]] == ["vq", "ft", "kl"] and float(rows[1][rows[0].index("psnr_db")]) > 3


def test_wrong_weight_files_give_their_line_and_the_rows_still_run(images: dict, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(256)) * 4)
    assert evaluate_main(["--models", f"vq={images['vqgan']}", "--shards", str(images["shards"]), "--image-size", "32",
                          "--max-items", "2", "--fid-weights", str(junk), "--lpips-weights", str(junk),
                          "--lpips-lin-weights", str(junk), "--out", str(tmp_path / "board"), "--no-progress"]) == 0
    (row,) = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["rows"]
    assert row["cells"]["rfid"].startswith("unavailable: put pt_inception-2015-12-05-6726825d.pth (sha256 6726825d")
    assert row["cells"]["rfid"].endswith("not the expected one") and "\n" not in row["cells"]["rfid"]
    assert row["cells"]["lpips"].startswith("unavailable: the LPIPS weights do not load: ")
    assert row["cells"]["psnr_db"] == {r["model"]: r for r in images["table"]["rows"]}["vq"]["cells"]["psnr_db"]


def test_page_has_the_rows_and_a_point_per_model(images: dict) -> None:
    page = (images["out"] / "leaderboard.html").read_text()
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", page) and "<link" not in page  # no network asset
    assert re.findall(r"<tr data-model='([^']+)'>", page) == ["vq", "ft", "kl"]
    plots = re.findall(r"<svg class='scatter'.*?data-key='([^']+)'.*?</svg>", page, re.S)
    numeric = [c["key"] for c in images["table"]["columns"]
               if any(isinstance(r["cells"][c["key"]], float) for r in images["table"]["rows"])]
    assert plots == numeric and plots[:2] == ["psnr_db", "ssim"]  # one per column that has numbers
    svg = re.search(r"<svg class='scatter'.*?</svg>", page, re.S).group(0)
    points = re.findall(r"<circle class='point' cx='([\d.]+)' cy='([\d.]+)'.*?data-model='(\w+)' "
                        r"data-x='([^']+)' data-y='([^']+)'", svg)
    rows = {r["model"]: r for r in images["table"]["rows"]}
    assert {p[2]: (float(p[3]), float(p[4])) for p in points} == {
        m: (r["bytes_per_item"], r["cells"]["psnr_db"]) for m, r in rows.items()}
    by_bytes = sorted(points, key=lambda p: float(p[3]))
    assert [float(p[0]) for p in by_bytes] == sorted(float(p[0]) for p in points)  # x grows with bytes
    best = max(points, key=lambda p: float(p[4]))
    assert float(best[1]) == min(float(p[1]) for p in points)  # the best PSNR is drawn highest


def test_mixed_modalities_generators_and_bad_sizes_are_refused(images: dict, tmp_path: Path, capsys) -> None:
    audio = tiny("wavtokenizer", tmp_path)
    cases = [(["--models", f"vq={images['vqgan']}", f"wt={audio}"], "mixes modalities (vq is image, wt is audio)"),
             (["--models", f"a={images['vqgan']}", f"a={images['klvae']}"], "label(s) ['a'] twice"),
             (["--models", str(images["vqgan"]), str(images["klvae"]), "--image-size", "32", "16", "8"],
              "--image-size takes one side or one per model (2)"),
             (["--model", str(images["vqgan"]), "--models", str(images["klvae"])], "not both"),
             (["--models", f"wt={audio}"], "needs audio shards but")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as stop:
            evaluate_main([*argv, "--shards", str(images["shards"]), "--out", str(tmp_path / "x"), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x" / "leaderboard.json").exists()
    with pytest.raises(UsageError, match=r"takes tokenizers of images, audio or meshes; not gen \(Linear\)"):
        modality_of([("vq", "a", build_model("configs/tokenizers/vqgan/tiny.yaml")),
                     ("gen", "b", torch.nn.Linear(1, 1))])


def test_audio_rows_per_second_with_dnsmos_or_its_reason(tmp_path: Path, monkeypatch, one_thread) -> None:
    clips = sorted((SAMPLES / "speech24k").glob("*.flac"))
    speech = shards("audio", [c for c in clips if c.name in ("vm-leavemsg.flac", "vm-onefor-full.flac")], tmp_path,
                    sample_rate=24000)
    model = tiny("wavtokenizer", tmp_path)
    monkeypatch.setenv("TOKENFORGE_HOME", str(tmp_path / "home"))  # no UTMOS checkpoint to find
    argv = ["--shards", str(speech), "--device", "cpu", "--no-progress"]
    assert evaluate_main(["--models", f"a={model}", *argv, "--out", str(tmp_path / "board")]) == 0
    table = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    (a,) = table["rows"]
    assert table["unit"] == "second of audio"
    assert a["cells"]["utmos"].startswith("unavailable: ")  # no UTMOS checkpoint given or in $TOKENFORGE_HOME
    assert 70 < a["codes_per_item"] < 80 and a["bits_per_code"] > 0  # the tiny config's 75 tokens per second
    assert a["bytes_per_item"] == pytest.approx(a["codes_per_item"] * a["bits_per_code"] / 8)
    assert 0 < a["cells"]["mel_distance"] < 50 and 0 < a["cells"]["stft_distance"] < 50
    keys = [c["key"] for c in table["columns"]]
    if any(k.startswith("dnsmos/") for k in keys):  # DNSMOS ran (speechmos installed): MOS, about 1 to 5
        assert {"dnsmos/sig", "dnsmos/bak", "dnsmos/ovrl"} <= set(keys)
        assert all(0.5 < a["cells"][k] < 5 for k in keys if k.startswith("dnsmos/"))  # noise: near the bottom
    else:
        assert a["cells"]["dnsmos"].startswith("unavailable: ")

    from tokenforge.metrics import dnsmos
    from tokenforge.metrics.weights import WeightsUnavailable

    def missing(*_, **__):
        raise WeightsUnavailable("dnsmos unavailable: put dnsmos_sig_bak_ovr.onnx (sha256 269f) at /nowhere")

    monkeypatch.setattr(dnsmos, "_scorer", missing)
    assert evaluate_main(["--models", f"a={model}", f"b={model}", *argv, "--out", str(tmp_path / "none")]) == 0
    table = json.loads((tmp_path / "none" / "leaderboard.json").read_text())
    first, second = table["rows"]
    assert first["cells"]["dnsmos"] == "unavailable: put dnsmos_sig_bak_ovr.onnx (sha256 269f) at /nowhere"
    assert first["cells"]["mel_distance"] == a["cells"]["mel_distance"]  # the other metrics still there, the same
    assert first["cells"] == second["cells"]  # same model, same numbers


def test_mesh_rows_f_score_at_several_thresholds(tmp_path: Path, one_thread) -> None:
    meshes = shards("meshes", [SAMPLES / "meshes" / n for n in ("blobby.ply", "bones.ply")], tmp_path,
                    num_surface=512, num_vol=256, num_near=256)
    plain = tiny("vat", tmp_path)
    torch.manual_seed(0)
    model = build_model("configs/tokenizers/vat/tiny.yaml").eval()
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 16)] * 3, indexing="ij"), -1).reshape(1, -1, 3)
    batch = next(iter(batches(meshes, "val", "mesh", 4, num_points=2048, num_queries=2048)))  # as evaluate reads
    with torch.no_grad():  # centre the random field of the held-out shape on zero: half the grid inside, a surface
        points = torch.cat([batch["points"], batch["normals"]], dim=-1)
        logits = model.occupancy(model.decode(model.encode(points)), grid)
        model.triplane.mlp[-1].bias -= logits.median()
    save_pretrained(model, tmp_path / "centred")
    assert evaluate_main(["--models", f"plain={plain}", f"centred={tmp_path / 'centred'}", "--shards", str(meshes),
                          "--resolution", "16", "--device", "cpu", "--out", str(tmp_path / "board"),
                          "--no-progress"]) == 0
    table = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert table["unit"] == "shape"
    assert [c["key"] for c in table["columns"]] == ["chamfer", "f_score_at/0.01", "f_score_at/0.02",
                                                    "f_score_at/0.05", "iou"]
    plain_row, centred = table["rows"]
    assert plain_row["cells"]["chamfer"].startswith("no value")  # a field without a surface: no Chamfer, no crash
    scores = [centred["cells"][f"f_score_at/{t}"] for t in ("0.01", "0.02", "0.05")]
    assert scores == sorted(scores) and 0 <= scores[0] and scores[-1] <= 1  # looser threshold, higher F-score
    assert 0 < centred["cells"]["chamfer"] < 4 and 0 <= centred["cells"]["iou"] <= 1
    assert centred["codes_per_item"] == plain_row["codes_per_item"] > 0 and centred["bits_per_code"] == 8
    assert "F-score@0.02" in (tmp_path / "board" / "leaderboard.md").read_text()


def test_demo_stage_ranks_the_evaluated_tokenizers(images: dict, tmp_path: Path) -> None:
    """The demo's ``leaderboard/image`` stage gathers the image tokenizers its evaluate stages scored."""
    run = Run(out=tmp_path, device="cpu", steps={}, preset="tiny")
    for name, size in (("vqgan", 32), ("flextok", 16)):
        metrics = evaluate_tokenizer(str(images[name]), images["shards"], tmp_path / "eval" / name, image_size=size,
                                     max_items=1, progress=False)
        run.results[f"{name}/fit"] = {"status": "ok", "checkpoint": str(images[name])}
        run.results[f"{name}/evaluate"] = {"status": "ok", "metrics_json": str(tmp_path / "eval" / name /
                                                                               "metrics.json")}
        assert metrics["protocol"]["n_items"] == 1
    run.results["gpt/evaluate"] = {"status": "ok", "metrics_json": None}  # a generator: left out
    name, stage, needs = leaderboard_stage("image")
    result = stage(run)
    assert name == "leaderboard/image" and needs == () and result["models"] == ["vqgan", "flextok"]
    table = json.loads((tmp_path / "leaderboard" / "image" / "leaderboard.json").read_text())
    assert [r["image_size"] for r in table["rows"]] == [32, 16]  # each at the side it was evaluated at
    assert "id='leaderboard-image'" in Path(result["page"]).read_text()
    with pytest.raises(RuntimeError, match="no audio tokenizer"):
        leaderboard_stage("audio")[1](run)


@pytest.mark.browser
def test_chromium_sorts_the_table_and_draws_the_points(images: dict, chromium, tmp_path: Path) -> None:
    url = (images["out"] / "leaderboard.html").resolve().as_uri()
    rows = {r["model"]: r for r in images["table"]["rows"]}
    for fragment, key, reverse in (("#sort=-bytes_per_item", "bytes_per_item", True),
                                   ("#sort=psnr_db", "psnr_db", False)):
        dom = chromium.dump_dom(url + fragment)
        table = re.search(r'<table class="leaderboard".*?</table>', dom, re.S).group(0)
        assert f'data-sorted="{"-" if reverse else ""}{key}"' in table  # the page's script ran
        order = re.findall(r'<tr data-model="(\w+)">', table)
        value = (lambda m: rows[m][key]) if key == "bytes_per_item" else (lambda m: rows[m]["cells"][key])
        assert order == sorted(rows, key=value, reverse=reverse)
        first = re.search(r'<tr data-model="\w+">(.*?)</tr>', table, re.S).group(1)  # read the cells back
        cells = re.findall(r"<td[^>]*>(.*?)</td>", first)
        assert cells[0] == order[0] and cells[1] == rows[order[0]]["method"] and "unavailable" in cells
        assert dom.count('<circle class="point"') == 3 * dom.count('<svg class="scatter"') >= 6  # 3 per plot
    shot = chromium.screenshot(url, tmp_path / "page.png", 1280, 1200)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    for colour in PALETTE[:3]:  # each model's point was drawn in its colour
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(1) < 30).sum() > 20, colour
