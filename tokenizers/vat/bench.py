"""`tokenforge bench tokenizer vat`: VAT encode shapes/s and decode meshes/s at 128^3 and 256^3 grids.

Random weights at a config's size (``--size paper``: configs/tokenizers/vat/paper.yaml on its base.yaml, 512 wide,
8 + 8 blocks, 256 latents, 9 scales; ``small``/``tiny``: the configs of the same names; surface points per shape
from the config's data), or ``--model``: any config or a trained checkpoint; shared/BENCHMARKS.md conditions: warm-up
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

from tokenforge.benchmarking import bench_label, bench_model, first_and_median, is_config
from tokenforge.config_models import data_args, size_config
from tokenforge.errors import UsageError
from tokenforge.tokenizers.vat.extract import logit_grids, marching_cubes
from tokenforge.tokenizers.vat.model import VAT

SIZES = ("paper", "small", "tiny")  # configs/tokenizers/vat/<size>.yaml (with its base.yaml)
DEFAULT_POINTS = 8192  # surface points per shape when --model is a checkpoint and --points is not given


def load(args: argparse.Namespace) -> tuple[VAT, int, str]:
    """(model, surface points per shape, label): a size's config or ``--model`` (config or checkpoint)."""
    if args.model:
        model, label = bench_model(args.model), bench_label(args.model)
        points = data_args(args.model).get("num_points") if is_config(args.model) else None
    else:
        config = size_config("tokenizers", "vat", args.size)
        model, label, points = bench_model(config), args.size, data_args(config).get("num_points")
    if not isinstance(model, VAT):
        raise UsageError(f"{args.model} is a {type(model).__name__}, not a VAT model")
    return model, args.points or points or DEFAULT_POINTS, label


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
        with ctx():
            timing = first_and_median(fn, device, warmup, repeats)
        return {"seconds": round(timing.pop("seconds"), 4), "first_call_s": round(timing.pop("first_call_s"), 3),
                **timing}

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
    parser.add_argument("--size", choices=SIZES, default="paper", help="a config of configs/tokenizers/vat (paper)")
    parser.add_argument("--model", default=None,
                        help="a config (YAML size overlay) or a checkpoint / saved folder instead of --size")
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
    model, points, label = load(args)
    model = model.to(device).eval()
    params = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    rows = []
    for dtype in args.dtypes:
        rows += measure(model, args.batch, points, args.resolutions, device, dtype == "bf16", args.chunk,
                        args.mc_shapes, args.warmup, args.repeats)
    for row in rows:
        row.update(size=label, params_m=params, device=str(device))
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0
