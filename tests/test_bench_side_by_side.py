"""tools/bench: the side-by-side workloads (official vs tokenforge in one process) and their report rows.

Without ``.anchors/official`` (CI): the row builder of docs/speed.md (`speed_table`) on recorded rows, and the
shell drivers parse. With it (a checkout set up by tools/bench/setup_anchors.sh): both new workloads run their
CPU smoke (``--device cpu --tiny``) against this working tree, each row a finite positive rate (the official
WavTokenizer keeps its hard-coded full-size encoder and discriminators, so its crops are 0.2 s here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "tools" / "bench"
OFFICIAL = REPO / ".anchors" / "official"
sys.path.insert(0, str(BENCH))

import speed_table  # noqa: E402  (tools/bench is not a package)


def row(impl: str, variant: str, value: float | None, peak: float | None = 1.0, **extra) -> dict:
    return {"workload": "llamagen_train_loop", "impl": impl, "batch": 64, "dtype": "bf16 autocast",
            "metric": "tokens_per_s", "value": value, "unit": "tokens/s", "peak_gib": peak, "variant": variant,
            "gpu": "NVIDIA H100 80GB HBM3", **extra}


def test_speed_rows_compare_like_with_like() -> None:
    rows = [row("official", "eager", 250_000.0, 9.5), row("official", "compile", 500_000.0, 7.25),
            row("ours", "eager", 300_000.0, 9.0), row("ours", "compile_fused", 650_000.0, 7.0),
            row("ours", "compile", None, None, error="RuntimeError: boom"),
            {"workload": "flextok", "status": "timeout", "timeout_s": 470}]
    lines = speed_table.rows_markdown(rows, {"gpu": "NVIDIA H100 80GB HBM3", "commit_proj": "0123456789abc"})
    body = lines[2:]
    assert len(body) == 4
    eager, fused, failed, timeout = body
    assert "250,000 tokens/s (eager)" in eager and "| 1.20x |" in eager and "9.50 / 9.00" in eager
    assert "500,000 tokens/s (compile)" in fused and "| 1.30x |" in fused and "7.25 / 7.00" in fused
    assert "failed (compile): RuntimeError: boom" in failed and "| - |" in failed
    assert timeout.startswith("| flextok | timeout |")
    assert all(line.endswith("| NVIDIA H100 80GB HBM3 | 0123456 |") for line in body)


def test_times_are_inverted_and_only_the_same_setting_matches() -> None:
    ms = {"workload": "linfusion", "metric": "forward_ms", "batch": 1, "dtype": "bf16 weights", "unit": "ms",
          "resolution": 4096, "peak_gib": 5.0}
    rows = [{**ms, "impl": "official", "variant": "linfusion", "value": 268.0},
            {**ms, "impl": "official", "variant": "linfusion", "value": 30.0, "resolution": 1024},
            {**ms, "impl": "ours", "variant": "ours", "value": 134.0}]
    (line,) = speed_table.rows_markdown(rows, {})[2:]
    assert "| 2.00x |" in line and "268 ms" in line and "4096 px" in line


@pytest.mark.parametrize("script", ["tools/bench/run_extra.sh", "tools/bench/setup_anchors.sh",
                                    "tools/gpu/speed_session.sh", "tools/gpu/wavtokenizer.sh"])
def test_drivers_parse(script: str) -> None:
    assert subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def anchors(tmp_path_factory) -> Path:
    """An anchors folder measuring this working tree: official sources linked, proj = the checkout, bench = the
    shared harness (common.py) + tools/bench."""
    common = next((p for p in (REPO / ".anchors" / "bench" / "common.py",
                               REPO.parent / "shared" / "bench" / "common.py") if p.is_file()), None)
    if not OFFICIAL.is_dir() or common is None:
        pytest.skip(".anchors/official or the shared bench harness is absent (tools/bench/setup_anchors.sh)")
    root = tmp_path_factory.mktemp("anchors")
    (root / "official").symlink_to(OFFICIAL)
    (root / "proj").symlink_to(REPO)
    (root / "bench").mkdir()
    shutil.copy(common, root / "bench" / "common.py")
    for script in BENCH.glob("*.py"):
        shutil.copy(script, root / "bench" / script.name)
    return root


def smoke(anchors: Path, workload: str, *args: str) -> list[dict]:
    out = anchors / f"{workload}.jsonl"
    env = {**os.environ, "ANCHORS_DIR": str(anchors), "ANCHORS_NS": str(anchors / "ns"), "OMP_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, str(anchors / "bench" / f"{workload}.py"), "--device", "cpu", "--tiny",
                             "--jsonl", str(out), *args], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_gpt_training_loop_smoke(anchors: Path) -> None:
    rows = smoke(anchors, "llamagen_train_loop", "--warmup", "1", "--repeats", "2")
    assert [(r["impl"], r["variant"]) for r in rows] == [("official", "eager"), ("ours", "eager")]
    for r in rows:
        assert r["value"] > 0 and r["unit"] == "tokens/s" and r["batch"] == 4
        assert 4.0 < r["last_loss"] < 7.0  # next-token cross-entropy over 256 codes starts near ln 256 = 5.55


def test_wavtokenizer_training_step_smoke(anchors: Path) -> None:
    rows = smoke(anchors, "wavtokenizer_train", "--seconds", "0.2")
    assert [(r["impl"], r["variant"]) for r in rows] == [("official", "eager"), ("ours", "eager")]
    for r in rows:
        assert r["unit"] == "crops/s" and r["value"] > 0 and r["batch"] == 2
        assert r["crop_s"] == pytest.approx(0.2) and r["first_loss_g"] > 0
    assert rows[0]["params_M"] > 100  # the official module at its hard-coded sizes (SEANet 512, discriminators)


def test_compat_sizes_come_from_the_configs() -> None:
    import compat  # tools/bench/compat.py: the shared scripts' SIZES tables, built from configs

    assert compat.AR_SIZES["B"]["dim"] == 768 and compat.AR_SIZES["B"]["depth"] == 12
    assert compat.AR_SIZES["tiny"]["multiple_of"] == 64 and compat.AR_SIZES["B"]["vocab_size"] == 16384
    assert compat.ENAT_SIZES["L"]["hidden_size"] == 1024 and compat.ENAT_SIZES["L"]["enc_depth"] == 22
