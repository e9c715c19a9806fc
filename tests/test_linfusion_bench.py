"""The LinFusion resolution bench: skip-by-prediction (quadratic for SDPA, linear for LinFusion), OOM blocking,
growth ratios, crossover, and the CLI's --append / --mark / --table merging on a tiny CPU run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenforge.generators.linfusion.bench import main
from tokenforge.generators.linfusion.bench_table import blocked, crossover, merge, predict_seconds, render


def row(attention: str, res: int, ms: float | None = None, status: str = "ok") -> dict:
    r = {"attention": attention, "dtype": "bfloat16", "resolution": res, "tokens": (res // 8) ** 2, "status": status}
    if ms is not None:
        r["forward_ms"], r["peak_gib"] = ms, 1.0
    return r


ROWS = [row("sdpa", 1024, 30.0), row("sdpa", 2048, 150.0), row("sdpa", 4096, 2000.0),
        row("linfusion", 1024, 40.0), row("linfusion", 2048, 70.0), row("linfusion", 4096, 250.0)]


def test_prediction_is_quadratic_for_sdpa_and_linear_for_linfusion() -> None:
    assert predict_seconds(ROWS, "sdpa", "bfloat16", 8192) == pytest.approx(2.0 * 16)  # 4x pixels -> 16x time
    assert predict_seconds(ROWS, "linfusion", "bfloat16", 8192) == pytest.approx(0.25 * 4)
    assert predict_seconds(ROWS, "sdpa", "bfloat16", 16384) == pytest.approx(2.0 * 256)  # from the 4096 row
    assert predict_seconds(ROWS, "sdpa", "bfloat16", 512) is None
    assert blocked(ROWS, "sdpa", "bfloat16", 8192, 60.0) is None
    assert blocked(ROWS, "sdpa", "bfloat16", 16384, 60.0) == "skipped (predicted 512 s)"
    assert blocked(ROWS, "linfusion", "bfloat16", 16384, 60.0) is None
    oom = ROWS + [row("linfusion", 8192, status="OOM")]
    assert blocked(oom, "linfusion", "bfloat16", 16384, 60.0) == "skipped (OOM at 8192)"


def test_crossover_ratio_and_largest_size_lines() -> None:
    rows = ROWS + [row("sdpa", 8192, 33000.0), row("sdpa", 16384, status="skipped (predicted 528 s)"),
                   row("linfusion", 8192, 1000.0), row("linfusion", 16384, 4100.0)]
    assert crossover(rows, "bfloat16") == 2048  # 1024: SDPA faster; from 2048 on LinFusion wins everywhere
    table = render(rows)
    assert "| linfusion | bfloat16 | 8192 | 1048576 | 1000.0 | ×4.00 (pixels ×4) | 1.00 |" in table
    assert "| sdpa | bfloat16 | 8192 | 1048576 | 33000.0 | ×16.50 (pixels ×4) |" in table
    assert "skipped (predicted 528 s)" in table
    assert "largest resolution completed, linfusion bfloat16: 16384" in table
    assert "largest resolution completed, sdpa bfloat16: 8192" in table
    assert "LinFusion faster than SDPA from 2048 px on" in table
    assert merge(rows, [row("sdpa", 1024, 10.0)])[-1]["forward_ms"] == 10.0
    assert len(merge(rows, [row("sdpa", 1024, 10.0)])) == len(rows)


def test_cli_append_skip_mark_and_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.json"
    base = ["--size", "tiny", "--dtype", "float32", "--warmup", "0", "--repeats", "1", "--device", "cpu",
            "--json", str(out), "--append"]
    assert main([*base, "--resolutions", "128"]) == 0
    first = json.loads(out.read_text())["rows"]
    assert [(r["attention"], r["resolution"], r["status"]) for r in first] == [("sdpa", 128, "ok"), ("linfusion", 128, "ok")]
    assert all(r["forward_ms"] > 0 and r["peak_gib"] is None for r in first)  # no CUDA: peak is null, not NaN
    # an impossible time limit: the next size is skipped by prediction, and the earlier rows are kept
    assert main([*base, "--resolutions", "256", "--attention", "sdpa", "--max-predicted-s", "1e-6"]) == 0
    assert main([*base, "--mark", "linfusion", "256", "timeout after 9 s"]) == 0
    rows = {(r["attention"], r["resolution"]): r for r in json.loads(out.read_text())["rows"]}
    assert len(rows) == 4 and rows[("sdpa", 128)] == first[0]
    assert rows[("sdpa", 256)]["status"].startswith("skipped (predicted")
    assert rows[("linfusion", 256)]["status"] == "timeout after 9 s"
    capsys.readouterr()
    assert main(["--json", str(out), "--table"]) == 0
    assert "timeout after 9 s" in capsys.readouterr().out
    assert main(["--resolutions", "100", "--device", "cpu"]) == 2  # not a multiple of 64
