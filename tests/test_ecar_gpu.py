"""E-CAR on CUDA: bf16 training step and generation agree with fp32 in shape/finiteness; MAR parity on the GPU."""

from __future__ import annotations

import pytest
import torch

from tokenforge.generators.ecar.dit import FlowDiT
from tokenforge.generators.ecar.model import ECAR
from tokenforge.parity import check

pytestmark = pytest.mark.gpu


def test_bf16_training_and_generation_on_cuda() -> None:
    torch.manual_seed(0)
    model = ECAR(16, [1, 2, 4, 8, 16], dim=256, depth=4, num_heads=4, num_classes=10, head_width=256,
                 head_depth=3).cuda()
    x = torch.randn(8, 16, 16, 16, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x, torch.arange(8, device="cuda") % 10)
    loss.backward()
    assert loss.isfinite() and all(p.grad is None or p.grad.isfinite().all() for p in model.parameters())
    model.eval()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model.sample_latents(torch.arange(4, device="cuda"), steps=4, cfg=2.0)
    assert out.shape == (4, 16, 16, 16) and out.isfinite().all()
    dit = FlowDiT(16, 16, 1, 256, 4, 4, 10).cuda().eval()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert dit.sample_latents(torch.arange(4, device="cuda"), steps=4).isfinite().all()


def test_mar_parity_lines_pass(fixtures_dir) -> None:
    assert all(line.status == "ok" for line in check(fixtures_dir / "mar"))
