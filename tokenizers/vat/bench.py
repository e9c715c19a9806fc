"""`tokenforge bench tokenizer vat`: VAT encode shapes/s and decode meshes/s at 128^3 and 256^3 grids.

Random weights at a config's size (``paper``: configs/tokenizers/vat/paper.yaml, 512 wide, 8 + 8 blocks, 256
latents, 9 scales; ``small``/``tiny``: the configs of the same names), shared/BENCHMARKS.md conditions: warm-up
calls, ``cuda.synchronize`` around each timed call, median of ``--repeats``, peak memory; fp32 and bf16
(autocast) rows. Inputs are B unit spheres of N surface points with their normals (throughput does not depend
on the shape). Rows:
- ``encode``: points -> per-scale ids (transformer over N + M tokens, Gaussian head, multi-scale quantizer).
- ``decode``: ids -> triplanes -> occupancy logits on the dense ``(r+1)^3`` grid for all B shapes, batched
  (``--chunk`` queries per decoder call bound the memory) -> ``meshes_per_s`` counts this GPU part only.
  ``mc_s_per_mesh``: marching cubes (CPU, scikit-image) on ``--mc-shapes`` of the decoded volumes, cut at their
  median logit so random weights still give a surface; ``meshes_per_s_with_mc`` = B / (field time + B * MC).

    tokenforge bench tokenizer vat --size paper --batch 16 --resolutions 128 256
    tokenforge bench vat --size tiny --device cpu --batch 2 --resolutions 32 --repeats 1 --warmup 0
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from tokenforge.benchmarking import median_seconds
from tokenforge.tokenizers.vat.extract import logit_grids, marching_cubes
from tokenforge.tokenizers.vat.model import VAT

SIZES: dict[str, dict[str, Any]] = {  # model init args + encoder points, as in configs/tokenizers/vat/*.yaml
    "paper": {"model": dict(dim=512, encoder_depth=8, decoder_depth=8, num_heads=8, num_latents=256, latent_dim=32,
                            codebook_size=4096, scales=[1, 2, 4, 8, 16, 32, 64, 128, 256], triplane_resolution=32,
                            triplane_channels=32, triplane_upsample=2, mlp_hidden=128), "points": 8192},
    "small": {"model": dict(dim=256, encoder_depth=4, decoder_depth=4, num_heads=8, num_latents=64, latent_dim=16,
                            codebook_size=1024, scales=[1, 2, 4, 8, 16, 32, 64], triplane_resolution=32,
                            triplane_channels=32, triplane_upsample=1, mlp_hidden=128), "points": 4096},
    "tiny": {"model": dict(dim=64, encoder_depth=1, decoder_depth=1, num_heads=2, num_latents=16, latent_dim=8,
                           codebook_size=256, scales=[1, 2, 4, 8, 16], triplane_resolution=8, triplane_channels=16,
                           triplane_upsample=1, mlp_hidden=32), "points": 512},
}


def sphere_batch(batch: int, points: int, device: torch.device) -> torch.Tensor:
    """``[B, N, 6]``: points on spheres of radius 0.5..0.8 with their outward normals."""
    g = torch.Generator().manual_seed(0)
    n = torch.nn.functional.normalize(torch.randn(batch, points, 3, generator=g), dim=-1)
    radius = torch.linspace(0.5, 0.8, batch)[:, None, None]
    return torch.cat([n * radius, n], dim=-1).to(device)


@torch.no_grad()
def measure(model: VAT, batch: int, points: int, resolutions: list[int], device: torch.device, bf16: bool,
            chunk: int, mc_shapes: int, warmup: int, repeats: int) -> list[dict[str, Any]]:
    x = sphere_batch(batch, points, device)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else torch.no_grad
    dtype = "bf16" if bf16 else "fp32"
    rows = []

    def run(fn) -> dict[str, Any]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with ctx():
            first = time.perf_counter()
            fn()
            first = time.perf_counter() - first
            seconds = median_seconds(fn, device, warmup, repeats)
        row = {"seconds": round(seconds, 4), "first_call_s": round(first, 3)}
        if device.type == "cuda":
            row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        return row

    row = run(lambda: model.encode(x))
    rows.append({"workload": "encode", "dtype": dtype, "batch": batch, "points": points,
                 "shapes_per_s": round(batch / row["seconds"], 2), **row})
    with ctx():
        ids = model.encode(x).ids

    def field(resolution: int) -> torch.Tensor:
        planes = model.decode(ids)
        return logit_grids(lambda q: model.occupancy(planes, q), batch, resolution, chunk, device)

    for r in resolutions:
        row = run(lambda r=r: field(r))
        with ctx():
            volumes = field(r).cpu().numpy()
        mc = []
        for vol in volumes[:mc_shapes]:
            start = time.perf_counter()
            marching_cubes(vol, level=float(np.median(vol)))
            mc.append(time.perf_counter() - start)
        mc_s = float(np.median(mc)) if mc else float("nan")
        rows.append({"workload": "decode", "dtype": dtype, "batch": batch, "resolution": r,
                     "grid_points_per_shape": (r + 1) ** 3, "meshes_per_s": round(batch / row["seconds"], 2),
                     "mc_s_per_mesh": round(mc_s, 3),
                     "meshes_per_s_with_mc": round(batch / (row["seconds"] + batch * mc_s), 3), **row})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenforge bench tokenizer vat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="paper")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--points", type=int, default=None, help="surface points per shape (size default)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256], help="grid cells per axis")
    parser.add_argument("--chunk", type=int, default=2**21, help="grid queries per decoder call, all shapes")
    parser.add_argument("--mc-shapes", type=int, default=2, help="decoded volumes timed through marching cubes")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["bf16", "fp32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", type=str, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.batch < 1 or min(args.resolutions) < 2:
        parser.error("--batch must be >= 1 and every resolution >= 2")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # honest fp32 rows
    torch.manual_seed(0)
    model = VAT(**SIZES[args.size]["model"]).to(device).eval()
    points = args.points or SIZES[args.size]["points"]
    params = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    rows = []
    for dtype in args.dtypes:
        rows += measure(model, args.batch, points, args.resolutions, device, dtype == "bf16", args.chunk,
                        args.mc_shapes, args.warmup, args.repeats)
    for row in rows:
        row.update(size=args.size, params_m=params, device=str(device))
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0
