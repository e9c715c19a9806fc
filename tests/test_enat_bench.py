"""`tokenforge bench enat` on CPU (tiny size): a row per mode and dtype, and the FLOP relation it reports."""

from __future__ import annotations

import json

import torch

from tokenforge.bench import main as bench_main
from tokenforge.generators.enat.bench import build, gflops_per_image


def test_bench_rows_and_flop_order(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert bench_main(["enat", "--size", "tiny", "--batch", "2", "--steps", "4", "--warmup", "0",
                           "--repeats", "1", "--dtypes", "fp32", "--device", "cpu", "--json", str(tmp_path / "b.json")]) == 0
        rows = json.loads((tmp_path / "b.json").read_text())
        assert [r["mode"] for r in rows] == ["reuse", "no-reuse", "maskgit"]
        flops = {r["mode"]: r["gflops_per_image"] for r in rows}
        # reuse encodes only new tokens; MaskGIT mode runs every block over all tokens
        assert 0 < flops["reuse"] < flops["no-reuse"] < flops["maskgit"]
        assert "fewer FLOPs" in capsys.readouterr().out
        # CFG doubles the rows: counted compute doubles too
        model = build("tiny").eval()
        mode = {"reuse": True, "mode": "enat"}
        assert abs(gflops_per_image(model, mode, 4, 2.5) / gflops_per_image(model, mode, 4, 0.0) - 2) < 1e-6
    finally:
        torch.set_num_threads(threads)
