"""`tokenforge bench enat`: ENAT 8-step sampling speed and compute, reuse vs no-reuse vs MaskGIT mode.

Conditions of shared/BENCHMARKS.md: random weights at a config's size (``--size L``: ENAT-L, 574 M minus the
unused ``prev_embedder``, configs/generators/enat/enat_l.yaml on its base.yaml; ``--model``: any ENAT config or a
trained checkpoint), class-conditional, CFG 2.5 with the conditional and unconditional passes batched
(2 x batch rows), batch 64, no VQ decode; warm-up, ``torch.cuda.synchronize()`` around the timed region,
median of ``--repeats``, peak memory. Rows: {reuse, no-reuse, maskgit} x {bf16 weights, fp32}
(``--compile``: the blocks run through ``torch.compile``). GFLOPs per image are counted once per mode with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls + attention, forward only) at batch 2, and the table
ends with the compute and speed ratios of reuse against no-reuse and MaskGIT mode. ``--size tiny`` runs on CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from tokenforge.benchmarking import bench_label, bench_model, timed
from tokenforge.config_models import size_config
from tokenforge.errors import UsageError
from tokenforge.generators.enat.model import ENAT
from tokenforge.generators.enat.sampler import enat_generate

SIZES = {"L": "enat_l", "tiny": "tiny"}  # --size -> configs/generators/enat/<name>.yaml (with its base.yaml)


def build(size: str, model: str | None = None) -> ENAT:
    """Random weights at a size's config, or ``model``: any ENAT config or a trained checkpoint."""
    built = bench_model(model or size_config("generators", "enat", SIZES[size]))
    if not isinstance(built, ENAT):
        raise UsageError(f"{model} is a {type(built).__name__}, not an ENAT model")
    return built
MODES = {"reuse": dict(reuse=True, mode="enat"), "no-reuse": dict(reuse=False, mode="enat"),
         "maskgit": dict(reuse=False, mode="maskgit")}


def gflops_per_image(model: ENAT, mode: dict[str, Any], steps: int, cfg: float, batch: int = 2) -> float:
    labels = torch.arange(batch, device=next(model.parameters()).device) % model.num_classes
    with FlopCounterMode(display=False) as counter:
        enat_generate(model, batch, labels, steps=steps, cfg_scale=cfg, **mode)
    return counter.get_total_flops() / batch / 1e9


def rows_for(model: ENAT, device: torch.device, args: argparse.Namespace, dtype: str) -> list[dict]:
    rows = []
    labels = torch.arange(args.batch, device=device) % model.num_classes
    for name, mode in MODES.items():
        gen = torch.Generator(device=device).manual_seed(0)
        fn = lambda: enat_generate(model, args.batch, labels, steps=args.steps, cfg_scale=args.cfg,  # noqa: E731
                                   generator=gen, **mode)
        seconds, peak = timed(fn, device, args.warmup, args.repeats)
        rows.append({"mode": name, "dtype": dtype, "compiled": args.compile, "batch": args.batch,
                     "images_per_s": args.batch / seconds, "seconds": seconds, "peak_gib": peak,
                     "gflops_per_image": gflops_per_image(model, mode, args.steps, args.cfg)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| mode | dtype | compiled | batch | images/s | GFLOPs/image | peak GiB |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['dtype']} | {r['compiled']} | {r['batch']} | {r['images_per_s']:.1f} | "
                     f"{r['gflops_per_image']:.4g} | {r['peak_gib']:.2f} |")
    for dtype in sorted({r["dtype"] for r in rows}):
        by = {r["mode"]: r for r in rows if r["dtype"] == dtype}
        if {"reuse", "no-reuse", "maskgit"} <= set(by):
            lines.append(
                f"\n{dtype}: reuse vs no-reuse: {by['no-reuse']['gflops_per_image'] / by['reuse']['gflops_per_image']:.2f}x "
                f"fewer FLOPs, {by['reuse']['images_per_s'] / by['no-reuse']['images_per_s']:.2f}x speed; reuse vs "
                f"maskgit: {by['maskgit']['gflops_per_image'] / by['reuse']['gflops_per_image']:.2f}x fewer FLOPs, "
                f"{by['reuse']['images_per_s'] / by['maskgit']['images_per_s']:.2f}x speed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tokenforge bench enat", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="L", help="a config's size (L: enat_l.yaml)")
    p.add_argument("--model", default=None, help="a config (YAML size overlay) or an ENAT checkpoint instead of --size")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--cfg", type=float, default=2.5)
    p.add_argument("--dtypes", nargs="+", choices=["bf16", "fp32"], default=["bf16", "fp32"])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile every block")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    rows: list[dict] = []
    for dtype in args.dtypes:
        torch.manual_seed(0)
        model = build(args.size, args.model).to(device).eval()
        if dtype == "bf16":
            model = model.to(torch.bfloat16)
        if args.compile:
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            for blk in model.blocks:
                blk.compile()
        rows += rows_for(model, device, args, dtype)
    label = bench_label(args.model) if args.model else f"ENAT-{args.size}"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{label} ({params:.1f} M params), {args.steps} steps, CFG {args.cfg}, on {where}\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
