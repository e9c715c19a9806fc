"""The demo's HTML report: loss curves from CSV logs, and the page rendered by headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from headless_chromium import chromium  # noqa: F401 (a fixture)

from tokenforge.demo import main as demo_main
from tokenforge.demo_stages import SAMPLES
from tokenforge.report import loss_curves, write_report

def test_loss_curves_plot_loss_columns(tmp_path: Path) -> None:
    log = tmp_path / "version_0" / "metrics.csv"
    log.parent.mkdir()
    log.write_text("epoch,step,train/loss,val/loss,lr\n0,0,2.0,,0.1\n0,1,1.5,,0.1\n0,1,,1.7,\n0,2,1.0,,0.1\n")
    png = loss_curves(log, tmp_path / "curve.png")
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (256, 480, 3) and image.std() > 10  # 6x3.2 in at 80 dpi, not blank
    empty = tmp_path / "version_1" / "metrics.csv"
    empty.parent.mkdir()
    empty.write_text("epoch,step,lr\n0,0,0.1\n")
    assert loss_curves(empty, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real reduced demo (vqgan, 3 steps) plus an audio section made of two bundled speech clips as WAV."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("report") / "demo"
    assert demo_main(["--out", str(out), "--methods", "vqgan", "--steps", "small"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    pairs = []
    for clip in sorted((SAMPLES / "speech24k").glob("*.flac"))[:2]:
        data, rate = sf.read(clip)
        wav = out / "audio" / f"{clip.stem}.wav"
        wav.parent.mkdir(exist_ok=True)
        sf.write(wav, data, rate)
        pairs.append([str(wav), str(wav)])
    summary["methods"].append("wavtokenizer")
    summary["modalities"]["wavtokenizer"] = "audio"
    summary["stages"]["wavtokenizer/reconstruct"] = {"status": "ok", "seconds": 0.0, "audio": pairs,
                                                     "metrics": {"mel_distance": 0.0}}
    summary["stages"]["wavtokenizer/fit"] = {"status": "failed", "error": "RuntimeError: shown in the page"}
    (out / "summary.json").write_text(json.dumps(summary))
    return write_report(out)


def test_page_links_resolve(page: Path) -> None:
    text = page.read_text()
    sources = re.findall(r"src='([^']+)'", text)
    assert len(sources) >= 8  # loss curve + 4 reconstruction pairs + 4 audio players
    for source in sources:
        assert (page.parent / unquote(source)).is_file(), source
    assert "RuntimeError: shown in the page" in text and "class='failed'" in text


@pytest.mark.browser
def test_chromium_renders_every_section(page: Path, chromium, tmp_path: Path) -> None:
    url = page.resolve().as_uri()
    dom = chromium.dump_dom(url)
    for section in ("data", "method-vqgan", "method-wavtokenizer"):
        assert f'id="{section}"' in dom, section
    assert dom.count("<audio") == 4 and dom.count("<img") >= 5 and "psnr_db/mean" in dom
    shot = chromium.screenshot(url, tmp_path / "page.png", 1280, 1600)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (1600, 1280, 3)
    # the page drew pictures, not only text on white: many distinct colours (reconstructions, loss curve)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500


def test_every_section_shows_its_claim_and_baseline(tmp_path: Path) -> None:
    """A summary with a claim and a baseline for every method: each section shows the claim, the measured
    verdict and the baseline value beside the model's; results.md carries the same numbers side by side."""
    from tokenforge.demo import declared, parts, results_table

    METHODS = list(parts())
    MODALITY = declared(METHODS)["modalities"]

    stages: dict = {}
    for i, method in enumerate(METHODS):
        stages[f"{method}/evaluate"] = {"status": "ok", "metrics": {"score": 10.0 + i}}
        stages[f"{method}/baseline"] = {"status": "ok", "baseline": f"trivial-{method}", "metrics": {"score": 1.5 + i}}
        stages[f"{method}/claim"] = {"status": "ok", "claim": f"claim of {method}", "verdict": f"seen {method}",
                                     "rows": [{"x": 1, "y": 2.5}]}
    stages["vat/claim"] = {"status": "failed", "error": "RuntimeError: no mesh"}
    summary = {"command": "tokenforge demo", "device": "cpu", "steps_preset": "small", "wall_seconds": 1.0,
               "methods": list(METHODS), **declared(METHODS), "stages": stages}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "results.md").write_text(results_table(summary))
    text = write_report(tmp_path).read_text()
    sections = re.findall(r"<section id='method-(\w+)'>(.*?)</section>", text, re.S)
    assert [name for name, _ in sections] == list(METHODS)
    for i, (method, body) in enumerate(sections):
        assert "paper claim, measured here" in body, method
        if method == "vat":
            assert "RuntimeError: no mesh" in body
        else:
            assert f"claim of {method}" in body and f"seen {method}" in body and "<td>2.5</td>" in body
        assert f"trivial baseline: trivial-{method}" in body
        assert f"<td>{10.0 + i:g}</td><td class='base'>{1.5 + i:g}</td>" in body, method
        if MODALITY[method] in ("image", "audio", "mesh"):
            assert "class='expect'" not in body or "seconds of CPU training" in body
    table = (tmp_path / "results.md").read_text()
    for i, method in enumerate(METHODS):
        assert f"| {method} | {MODALITY[method]} | evaluate: score | {10.0 + i:g} | {1.5 + i:g} (trivial-{method}) |" \
            in table
    assert "| vat | F-score vs bytes per scale | failed: RuntimeError: no mesh |" in table
    assert "| ecar | claim of ecar | seen ecar |" in table
