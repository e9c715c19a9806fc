"""`tokenforge bench ecar`: E-CAR vs. a matched DiT (`FlowDiT`) — FLOPs and latency per generated 256 px image.

The claim under test (E-CAR abstract): DiT-level quality at ~10x fewer FLOPs and ~5x faster generation of one
256x256 image. Both models run on MAR's KL-16 latent grid (16 x 16 x 16 for 256 px) at the same width/depth
(``--size B``: 768 x 12, MAR-B's diffusion head 6 x 1024 for E-CAR: configs/generators/ecar/mar_b.yaml on its
base.yaml; ``L``: mar_l.yaml; ``--model``: any E-CAR config or trained checkpoint, the DiT matched to it); E-CAR runs S = 5 stages (1, 2, 4, 8, 16)
with ``--ecar-steps`` Euler steps each, the DiT ``--dit-steps`` Euler steps (patch 1, 256 tokens; ``--dit-patch
2`` gives DiT-B/2's 64 tokens). FLOPs come from ``torch.utils.flop_counter`` (matmuls/attention, x2 per MAC) on
one generation, per image; latency: warm-up, ``torch.cuda.synchronize()``, median of ``--repeats``, peak memory,
bf16 autocast and fp32 rows. Decoding latents to pixels is the same for both and is not counted. Random weights
(speed does not depend on training). ``--size tiny`` runs on CPU in seconds. Never asserts timings.
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
from tokenforge.generators.ecar.dit import FlowDiT
from tokenforge.generators.ecar.model import ECAR

SIZES = {"B": "mar_b", "L": "mar_l", "tiny": "tiny"}  # --size -> configs/generators/ecar/<name>.yaml


def build(size: str, dit_patch: int, model: str | None = None) -> tuple[ECAR, FlowDiT]:
    """E-CAR at a size's config (on its base.yaml; or ``model``: any E-CAR config or trained checkpoint) and the
    DiT matched to it: same latent grid, width, depth, heads and classes (random weights)."""
    ecar = bench_model(model or size_config("generators", "ecar", SIZES[size]))
    if not isinstance(ecar, ECAR):
        raise UsageError(f"{model} is a {type(ecar).__name__}; this bench measures an E-CAR model against its DiT")
    a = ecar.init_args
    dit = FlowDiT(a["latent_channels"], a["scales"][-1], dit_patch, a["dim"], a["depth"], a["num_heads"],
                  num_classes=a["num_classes"])
    return ecar, dit


def flops(fn: Any) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tokenforge bench ecar", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="B on CUDA, tiny on CPU by default")
    p.add_argument("--model", default=None, help="a config (YAML size overlay) or an E-CAR checkpoint instead of --size")
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--dtype", nargs="+", choices=("bf16", "fp32"), default=["bf16", "fp32"])
    p.add_argument("--ecar-steps", type=int, default=10, help="Euler steps per E-CAR stage")
    p.add_argument("--dit-steps", type=int, default=50)
    p.add_argument("--dit-patch", type=int, default=1)
    p.add_argument("--cfg", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = args.size or ("B" if device.type == "cuda" else "tiny")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    ecar, dit = (m.to(device).eval() for m in build(size, args.dit_patch, args.model))
    size = bench_label(args.model) if args.model else size
    runs = {
        "ecar": lambda labels: ecar.sample_latents(labels, steps=args.ecar_steps, cfg=args.cfg),
        "dit": lambda labels: dit.sample_latents(labels, steps=args.dit_steps, cfg=args.cfg),
    }
    params = {"ecar": sum(q.numel() for q in ecar.parameters()), "dit": sum(q.numel() for q in dit.parameters())}
    one = torch.zeros(1, dtype=torch.long, device=device)
    gflops = {name: flops(lambda: fn(one)) / 1e9 for name, fn in runs.items()}
    rows: list[dict[str, Any]] = []
    print(f"size {size} on {device}: params E-CAR {params['ecar'] / 1e6:.1f} M, DiT {params['dit'] / 1e6:.1f} M; "
          f"GFLOPs/image E-CAR {gflops['ecar']:.2f}, DiT {gflops['dit']:.2f} "
          f"(ratio {gflops['dit'] / max(gflops['ecar'], 1e-12):.2f}x)")
    print("| model | dtype | batch | s/batch | ms/image | peak GiB | GFLOPs/image |")
    print("|---|---|---|---|---|---|---|")
    for dtype in args.dtype:
        for batch in args.batch:
            labels = torch.arange(batch, device=device) % 1000 % ecar.num_classes
            for name, fn in runs.items():
                def call() -> None:
                    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=dtype == "bf16"):
                        fn(labels)
                seconds, peak = timed(call, device, args.warmup, args.repeats)
                row = {"model": name, "dtype": dtype, "batch": batch, "seconds": seconds,
                       "ms_per_image": 1000 * seconds / batch, "peak_gib": peak, "gflops_per_image": gflops[name],
                       "params": params[name], "size": size}
                rows.append(row)
                print(f"| {name} | {dtype} | {batch} | {seconds:.4f} | {row['ms_per_image']:.2f} | {peak:.2f} | "
                      f"{gflops[name]:.2f} |")
    for dtype in args.dtype:
        for batch in args.batch:
            pair = {r["model"]: r for r in rows if r["dtype"] == dtype and r["batch"] == batch}
            print(f"speed-up E-CAR vs DiT ({dtype}, batch {batch}): {pair['dit']['seconds'] / pair['ecar']['seconds']:.2f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "gflops": gflops, "params": params, "args": vars(args)}, handle, indent=1)
    return 0
