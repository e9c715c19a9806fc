"""`tokenforge demo`: the stage plan, failure handling, metric selection, and a real reduced run (vqgan -> gpt)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokenforge.demo import Stages, main, part_name, parts, plan, results_table, steps_table
from tokenforge.demo_stages import SAMPLES, Run, config, headline

METHODS = tuple(parts())  # every method's demo part (tokenforge.methods.Method.demo)


def test_samples_ship_with_attribution() -> None:
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    listed = {entry["path"] for entry in manifest["files"]}
    on_disk = {p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*") if p.is_file()
               and p.suffix in {".png", ".jpg", ".flac", ".ply"}}
    assert listed == on_disk and len(on_disk) > 200
    attribution = (SAMPLES / "ATTRIBUTION.md").read_text()
    assert all(f"`{path}`" in attribution for path in listed)
    assert all(entry["license"] for entry in manifest["files"])
    kinds = {path.split("/")[0] for path in listed}
    assert kinds == {"images", "speech24k", "meshes"}


def test_plan_pulls_in_what_each_method_needs() -> None:
    names = [name for name, _, _ in plan(["ecar"])]
    assert names == ["data/photos", "data/faces", "klvae/fit", "klvae/reconstruct", "klvae/evaluate",
                     "encode/klvae", "ecar/fit", "ecar/generate", "ecar/evaluate", "ecar/baseline", "ecar/claim"]
    everything = [name for name, _, _ in plan(list(METHODS))]
    for method in METHODS:  # every landed method has a fit stage and a visible result stage
        assert f"{method}/fit" in everything
        assert any(n.startswith(f"{method}/") and n.split("/")[1] in ("reconstruct", "generate") for n in everything)
    assert len(everything) == len(set(everything))
    for method in METHODS:  # a trivial baseline beside every method's quality number
        assert f"{method}/baseline" in everything, method
    claims = {name.split("/")[0] for name in everything if name.endswith("/claim")}
    assert claims == {"linfusion", "enat", "ecar", "flextok", "vat", "wavtokenizer"}  # the papers' claims
    assert config(parts()["gpt"].config, "tiny").parts[-2:] == ("autoregressive", "tiny.yaml")
    assert config("tokenizers/flextok", "small").name == "small.yaml"
    assert config("tokenizers/vqgan", "small").name == "tiny.yaml"
    assert set(steps_table("default")) == set(METHODS) and set(steps_table("small").values()) == {3}
    # the parts come from the methods' declarations: a method's name or alias selects its part
    assert part_name("autoregressive") == part_name("llamagen") == "gpt" and part_name("dalle") is None


def test_failed_stage_skips_dependents_and_others_run(tmp_path: Path, capsys) -> None:
    run = Run(out=tmp_path, device="cpu", steps={}, preset="tiny")
    stages = Stages(run)

    def boom(_: Run) -> dict:
        raise ValueError("broken input")

    stages.run("a/fit", boom)
    stages.run("a/generate", lambda r: {"x": 1}, needs=("a/fit",))
    stages.run("b/fit", lambda r: {"x": 2})
    assert run.results["a/fit"]["status"] == "failed" and "broken input" in run.results["a/fit"]["error"]
    assert run.results["a/generate"] == {"status": "skipped", "reason": "needs a/fit"}
    assert run.results["b/fit"]["status"] == "ok" and run.results["b/fit"]["x"] == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[demo]")]
    assert any("a/fit" in line and "FAILED" in line for line in lines)


def test_headline_picks_scalar_metrics() -> None:
    metrics = {"protocol": {"psnr": 1}, "psnr_db": {"mean": 20.123456, "std": 1.0, "n": 4}, "ssim": {"mean": 0.5},
               "seconds": 3.0, "nll_bits_per_token": 7.25, "files": {"a.png": {"psnr_db": 1}}, "flag": True}
    assert headline(metrics) == {"psnr_db/mean": 20.1235, "ssim/mean": 0.5, "nll_bits_per_token": 7.25}


def test_reduced_demo_runs_vqgan_then_gpt(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--methods", "vqgan,gpt", "--steps", "small"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["vqgan", "gpt"]
    stages = summary["stages"]
    assert list(stages) == ["data/photos", "data/faces", "vqgan/fit", "vqgan/reconstruct", "vqgan/evaluate",
                            "encode/vqgan", "gpt/fit", "gpt/generate", "gpt/evaluate", "vqgan/baseline",
                            "leaderboard/image", "gpt/baseline"]
    assert all(result["status"] == "ok" for result in stages.values()), stages
    assert stages["data/faces"]["splits"] == {"train": 150, "val": 50}
    assert stages["encode/vqgan"]["codes_used"] > 16 and stages["encode/vqgan"]["unigram_entropy_nats"] > 2
    assert stages["vqgan/fit"]["steps"] >= steps_table("small")["vqgan"]
    assert Path(stages["vqgan/fit"]["checkpoint"]).is_file()
    rows = list(csv.DictReader(open(stages["vqgan/fit"]["metrics_csv"])))
    assert any(row.get("train/loss_g") for row in rows)

    # held-out reconstructions: input | output pairs of the 32 px crops, PSNR in a sane range for a 3-step model
    pictures = stages["vqgan/reconstruct"]["pictures"]
    assert len(pictures) == 4 and Image.open(pictures[0]).size == (64, 32)
    psnr = stages["vqgan/evaluate"]["metrics"]["psnr_db/mean"]
    assert 5 < psnr < 40
    assert stages["vqgan/evaluate"]["metrics"]["bytes_per_item"] == 64  # 8x8 ids at 8 bits
    board = json.loads((out / "leaderboard" / "image" / "leaderboard.json").read_text())  # evaluate --models
    assert [(r["model"], r["bytes_per_item"]) for r in board["rows"]] == [("vqgan", 64)]
    assert board["rows"][0]["cells"]["psnr_db"] == pytest.approx(psnr, abs=1e-4)

    # samples: 8 decoded 32 px images, labels cycling 0, 1; ids in the VQGAN's vocabulary
    samples = stages["gpt/generate"]["samples"]
    assert len(samples) == 8 and Image.open(samples[0]).size == (32, 32)
    assert stages["gpt/generate"]["labels"] == [0, 1] * 4
    ids = np.load(Path(stages["gpt/generate"]["out"]) / "ids.npy")
    assert ids.shape == (8, 64) and 0 <= ids.min() and ids.max() < 256
    nll = stages["gpt/evaluate"]["metrics"]["nll_nats_per_token"]
    assert 0 < nll < 2 * np.log(256)

    # trivial baselines beside the model's numbers: the mean training image (0 bytes), the unigram entropy
    mean_image = stages["vqgan/baseline"]["metrics"]
    assert stages["vqgan/baseline"]["baseline"] == "mean training image" and mean_image["bytes_per_item"] == 0
    assert 8 < mean_image["psnr_db/mean"] < 30 and mean_image["psnr_db/mean"] != psnr
    entropy = stages["encode/vqgan"]["unigram_entropy_nats"]
    assert stages["gpt/baseline"]["metrics"] == {"nll_nats_per_token": entropy}

    table = (out / "results.md").read_text()
    assert table == results_table(summary)
    assert (f"| vqgan | image | evaluate: psnr_db/mean | {psnr:g} | {mean_image['psnr_db/mean']:g} "
            "(mean training image) |") in table
    assert (f"| gpt | image tokens | evaluate: nll_nats_per_token | {nll:g} | {entropy:g} "
            "(unigram entropy of the training tokens) |") in table
    assert "vary slightly across CPUs" in table
    page = (out / "index.html").read_text()
    assert "trivial baseline: mean training image" in page and f"<td class='base'>{entropy:g}</td>" in page
    assert "seconds of CPU training" in page  # what to expect, beside the pictures
    assert "id='method-vqgan'" in page and "id='method-gpt'" in page and (out / "curves" / "vqgan.png").is_file()


def test_unknown_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--methods", "vqgan,dalle"])


def test_rerun_gives_the_same_numbers(tmp_path: Path) -> None:
    """results.md must be reproducible: two runs of the same command agree exactly (seeded fits, no time seeds)."""
    torch.set_num_threads(1)
    runs = []
    for name in ("a", "b"):
        assert main(["--out", str(tmp_path / name), "--methods", "flextok", "--steps", "small", "--no-report"]) == 0
        runs.append(json.loads((tmp_path / name / "summary.json").read_text())["stages"])
    for stage in ("flextok/reconstruct", "flextok/evaluate"):
        assert runs[0][stage]["metrics"] == runs[1][stage]["metrics"], stage


def test_saved_weights_are_group_readable(tmp_path: Path) -> None:
    """safetensors writes 0600 files; save_pretrained and LinFusion's release layout must give 0644 (umask 022)."""
    import os
    import stat

    from tokenforge.hub import from_pretrained, save_pretrained
    from tokenforge.nn.conv1d import Conv1d

    old = os.umask(0o022)
    try:
        folder = save_pretrained(Conv1d(2, 3, 1), tmp_path / "model")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        assert modes == {"config.json": 0o644, "model.safetensors": 0o644}
        os.umask(0o077)  # a private umask is honoured, not widened
        private = save_pretrained(Conv1d(2, 3, 1), tmp_path / "private")
        assert stat.S_IMODE((private / "model.safetensors").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert isinstance(from_pretrained(folder), Conv1d)


def test_trivial_baselines_score_through_evaluate(tmp_path: Path) -> None:
    """Mean training image and silence, scored by tokenforge.evaluate on real held-out shards: 0 bytes each."""
    from tokenforge.baselines import image_baseline, mean_image, silence_baseline
    from tokenforge.demo_stages import make_data

    run = Run(out=tmp_path, device="cpu", steps={}, preset="tiny")
    photos = make_data(run, "photos")["shards"]
    mean = mean_image(photos, 16)
    assert mean.shape == (3, 16, 16) and -1 <= mean.min() < mean.max() <= 1
    image = image_baseline(photos, tmp_path / "img", 16)
    assert image["protocol"]["n_items"] == 4 and image["bytes_per_item"] == 0
    assert 8 < image["psnr_db"]["mean"] < 30 and 0 <= image["ssim"]["mean"] < 0.6  # a guess, not a picture
    speech = make_data(run, "speech")["shards"]
    silence = silence_baseline(speech, tmp_path / "audio")
    assert silence["protocol"]["n_items"] == 4 and silence["bytes_per_second"] == 0
    assert silence["mel_distance"]["mean"] > 1.0  # log-mel of zeros is far from speech


def test_sphere_baseline_fits_a_radius_and_scores_meshes(shared_data: Path, tmp_path: Path) -> None:
    from tokenforge.baselines import Sphere, sphere_radius
    from tokenforge.data.shards import make_shards
    from tokenforge.evaluate import evaluate_tokenizer

    src = tmp_path / "src"
    src.mkdir()
    for name in ["icosahedron", "3torus", "eight", "sphere966"]:  # small real meshes: shards in seconds
        (src / f"{name}.ply").write_bytes((shared_data / "meshes" / f"{name}.ply").read_bytes())
    meshes = tmp_path / "raw"
    make_shards("meshes", src, meshes, shard_size=2, val_fraction=0.5, progress=False, num_surface=512,
                num_vol=512, num_near=512)
    radius = sphere_radius(meshes)
    assert 0.2 <= radius <= 0.95
    metrics = evaluate_tokenizer(Sphere(radius), meshes, tmp_path / "sphere", resolution=16, progress=False)
    assert 0.05 < metrics["iou"]["mean"] < 0.95 and metrics["no_surface"] == 0 and metrics["bytes_per_item"] == 0
    # a sphere far too small is a worse guess than the fitted one
    tiny = evaluate_tokenizer(Sphere(0.05), meshes, tmp_path / "tiny", resolution=16, progress=False)
    assert tiny["iou"]["mean"] < metrics["iou"]["mean"]


def test_peak_memory_sees_a_large_allocation() -> None:
    from tokenforge.demo_claims import PeakMemory

    with PeakMemory() as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB
        del block
    assert peak.mib is not None and 56 < peak.mib < 200
    with PeakMemory() as small:
        torch.ones(16)
    assert small.mib < 40


def test_compute_claims_run_the_benches(monkeypatch) -> None:
    """E-CAR vs DiT and LinFusion vs softmax attention, measured in seconds on tiny random models: FLOP ratios
    are exact counts; time growth only needs to separate quadratic from linear attention by a clear margin."""
    from tokenforge.generators.ecar.demo import claim as ecar_claim
    from tokenforge.generators.linfusion import demo as linfusion_demo

    torch.set_num_threads(1)
    ecar = ecar_claim(None)
    by = {row["model"]: row for row in ecar["rows"]}
    assert by["dit"]["gflops_per_image"] > 2 * by["ecar"]["gflops_per_image"] > 0 and "fewer FLOPs" in ecar["verdict"]
    monkeypatch.setattr(linfusion_demo, "RESOLUTIONS", (128, 384))
    lin = linfusion_demo.claim(None)
    assert {r["attention"] for r in lin["rows"]} == {"softmax", "sdpa", "linfusion"} and len(lin["rows"]) == 6
    growth = lin["growth"]
    # 9x the pixels: softmax attention's materialised 2304^2 map costs far more memory than linear attention's
    assert growth["softmax"]["memory_mib"] > 4 * growth["linfusion"]["memory_mib"]
    assert growth["softmax"]["time_x"] > growth["linfusion"]["time_x"]


def test_data_stage_accepts_rejected_files_and_shows_the_count(tmp_path: Path, capsys) -> None:
    """`shards make` exits 3 when it rejects files (e.g. a malformed one among the samples): the stage still
    succeeds, and its line shows how many files were rejected."""
    from tokenforge.demo_stages import make_data

    samples = tmp_path / "samples"
    (samples / "speech24k").mkdir(parents=True)
    for clip in sorted((SAMPLES / "speech24k").glob("*.flac"))[:3]:
        (samples / "speech24k" / clip.name).write_bytes(clip.read_bytes())
    (samples / "speech24k" / "broken.flac").write_bytes(b"fLaC but not really" * 10)
    run = Run(out=tmp_path / "demo", device="cpu", steps=steps_table("small"), preset="tiny", samples=samples)
    result = Stages(run).run("data/speech", lambda r: make_data(r, "speech"))
    assert result["rejected"] == 1 and sum(result["splits"].values()) == 3
    captured = capsys.readouterr()
    assert "skipped: " in captured.err and "broken.flac" in captured.err
    assert any(line.startswith("[demo] data/speech") and '"rejected": 1' in line for line in captured.out.splitlines())


def plugin_part():
    """A demo part as a method package outside tokenforge would declare it (`Method.demo`)."""
    from tokenforge.demo_stages import DemoPart

    return DemoPart("plugged", "image", "tokenizers/vqgan", ("speech",),
                    (("plugged/fit", lambda run: {"steps": run.steps["plugged"]}, ("data/speech",)),),
                    {"default": 7, "long": 9}, claim=(("plugged/claim", lambda run: {}, ()),))


def test_a_method_plugs_its_part_into_the_demo(monkeypatch) -> None:
    """The plan, the step table and --methods come from the registry: a new method's part joins without a core
    edit, selected by its part name or its method's name."""
    import tokenforge.demo as demo
    from tokenforge.methods import Method

    methods = {**demo.registry(), "plugin": Method("plugin", "tokenizer", "image", "grid", "plugin_package",
                                                   aliases=("plug",), demo=f"{__name__}:plugin_part")}
    monkeypatch.setattr(demo, "registry", lambda: methods)
    demo._declared.cache_clear()
    try:
        assert demo.part_name("plug") == demo.part_name("plugin") == "plugged"
        assert demo.steps_table("default")["plugged"] == 7
        assert [name for name, _, _ in demo.plan(["plugged"])] == ["data/speech", "plugged/fit", "plugged/claim"]
    finally:
        demo._declared.cache_clear()
