"""Where FlexTok's flex and SDPA encoder paths differ on a GPU: the mask or bf16 rounding?

Runs the GPU test's encoder (dim 256, 256 registers, 32x32 latent) four ways: fp32 SDPA, fp32 flex (same
mask, fp32 kernels: any mask difference shows here), bf16-autocast SDPA and bf16-autocast flex, each against a
float64 SDPA reference; prints the error of each (outputs and the registers' gradient) as max, p99.9 and the
share of entries above 0.05. A mask bug makes fp32 flex differ; pure rounding makes the two bf16 paths err
alike against float64. Usage: python tools/gpu/flextok_flex_budget.py
"""

from __future__ import annotations

import copy

import torch

from tokenforge.tokenizers.flextok import FlexTokEncoder


def run(enc: FlexTokEncoder, lat: torch.Tensor, backend: str, dtype: torch.dtype | None):
    enc.attention = backend
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        out = enc(lat).double()
    (grad,) = torch.autograd.grad(out.square().sum(), enc.registers)
    return out.detach(), grad.double()


def stats(name: str, value: torch.Tensor, ref: torch.Tensor) -> None:
    err = (value - ref).abs().flatten()
    scale = ref.abs().max().item()
    print(f"{name:<28} max {err.max().item():.4g}  p99.9 {err.quantile(0.999).item():.4g}  "
          f"share>0.05 {(err > 0.05).float().mean().item():.4f}  (|ref| max {scale:.3g})")


def main() -> None:
    torch.manual_seed(0)
    enc = FlexTokEncoder(latent_channels=16, dim=256, depth=2, head_dim=64, num_registers=256, max_grid=16).cuda()
    torch.nn.init.normal_(enc.to_latents.proj.weight)
    lat = torch.randn(4, 16, 32, 32, device="cuda")
    ref64 = copy.deepcopy(enc).double()
    ref = run(ref64, lat.double(), "sdpa", None)
    print(torch.cuda.get_device_name(), torch.__version__)
    for backend, dtype in (("sdpa", None), ("flex", None), ("sdpa", torch.bfloat16), ("flex", torch.bfloat16)):
        out, grad = run(enc, lat, backend, dtype)
        tag = f"{backend} {'bf16' if dtype else 'fp32'}"
        stats(tag + " out", out, ref[0])
        stats(tag + " grad", grad, ref[1])
    a, b = run(enc, lat, "flex", torch.bfloat16), run(enc, lat, "sdpa", torch.bfloat16)
    stats("flex bf16 vs sdpa bf16 out", a[0], b[0])
    stats("flex bf16 vs sdpa bf16 grad", a[1], b[1])


if __name__ == "__main__":
    main()
