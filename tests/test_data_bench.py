"""`tokenforge bench data` runs end to end on real shards and prints one figure per modality and worker count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenforge.bench import main as bench_main


def test_bench_data_prints_rates(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = bench_main(["data", "--modality", "image,tokens", "--data", str(shared_data), "--workers", "0",
                       "--batches", "2", "--batch-size", "4", "--image-size", "64", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {(r["modality"], r["workers"]): r for r in report["results"]}
    assert set(rows) == {("image", 0), ("tokens", 0)}
    assert all(r["samples_per_s"] > 0 and r["per_worker"] == r["samples_per_s"] for r in rows.values())


def test_bench_data_needs_one_modality_for_given_shards(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_main(["data", "--shards", "/nonexistent"])
