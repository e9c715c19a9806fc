"""The DiT baseline (`FlowDiT`) trains with E-CAR's flow objective, and `tokenforge bench ecar` runs on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_vqgan import load_images  # tests/ is on sys.path

from tokenforge.bench import main as bench_main
from tokenforge.generators.ecar.dit import FlowDiT
from tokenforge.generators.ecar.mar import patchify


@pytest.mark.learning
def test_dit_identity_at_init_and_loss_falls(shared_data: Path) -> None:
    torch.manual_seed(0)
    dit = FlowDiT(4, 8, 2, dim=32, depth=2, num_heads=2, num_classes=3)
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(dit.velocity(x, torch.rand(2), torch.tensor([0, 1])), torch.zeros_like(x))  # zero-init out
    latents = torch.nn.functional.pixel_unshuffle(load_images(shared_data / "images", size=16), 2)[:, :4]
    opt = torch.optim.AdamW(dit.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = dit(latents, torch.arange(len(latents)) % 3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    out = dit.eval().sample_latents(torch.tensor([0, 2]), steps=3, cfg=2.0)
    assert out.shape == (2, 4, 8, 8) and out.isfinite().all()
    with pytest.raises(ValueError, match="latents"):
        dit(torch.randn(1, 4, 6, 6))


def test_bench_cpu_rows_and_flop_ratio(tmp_path: Path, capsys) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "bench.json"
    assert bench_main(["ecar", "--batch", "1", "--dtype", "fp32", "--repeats", "1", "--warmup", "0",
                       "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {r["model"] for r in data["rows"]} == {"ecar", "dit"}
    # tiny: 3 stages of 4/16/64 tokens x 10 steps through a small head vs 50 full transformer passes over 16 tokens
    assert data["gflops"]["dit"] > data["gflops"]["ecar"] > 0
    assert "speed-up E-CAR vs DiT" in capsys.readouterr().out
    assert patchify(torch.zeros(1, 4, 8, 8), 2).shape == (1, 16, 16)
