"""``tokenforge ecar-generate``: sample latents with an `ECAR`, decode them with its KL tokenizer, write PNGs.

    tokenforge ecar-generate --generator logs/.../last.ckpt --tokens shards/latents --n 16 --classes 0 1 \
        --stages 3 --steps 10 --cfg 2.0 --out samples/

Writes ``latents.npy`` (N, C, H, W), ``labels.json``, ``sample_XXXX.png`` and ``grid.png``. The tokenizer comes
from ``--tokenizer`` or the token-shard manifest (``--tokens``), as in ``tokenforge generate``. ``--steps`` is one
Euler step count for every stage or one per stage; ``--stages`` < S stops early (a low-resolution preview).
A `FlowDiT` checkpoint (the baseline) samples with ``--steps`` Euler steps at full resolution.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenforge import console
from tokenforge.devices import resolve_device
from tokenforge.errors import UsageError
from tokenforge.generators.autoregressive.generate import (image_grid, labels_for, load_module, require_tokenizer,
                                                           save_images, tokenizer_name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokenforge ecar-generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", required=True, help="ECAR checkpoint / folder")
    p.add_argument("--tokenizer", default=None, help="KL tokenizer checkpoint / folder, or official:diffusers_vae:<dir>")
    p.add_argument("--tokens", default=None, help="latent-shard folder whose manifest names the tokenizer")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--classes", type=int, nargs="*", default=None, help="labels to cycle through (default random)")
    p.add_argument("--stages", type=int, default=None, help="number of stages to run (default all)")
    p.add_argument("--steps", type=int, nargs="+", default=[10], help="Euler steps per stage (one value or one per stage)")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--bf16", action="store_true", help="autocast the generator and decoder to bfloat16")
    p.add_argument("--out", required=True)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tokenforge.generators.ecar.dit import FlowDiT
    from tokenforge.generators.ecar.model import ECAR

    device = resolve_device(args.device)
    generator = load_module(args.generator)
    if not isinstance(generator, (ECAR, FlowDiT)):
        what = ("is a tokenizer: pass it as --tokenizer and an E-CAR or DiT checkpoint as --generator"
                if callable(getattr(generator, "encode", None)) else "is no E-CAR or DiT: GPT and VAR sample with "
                "`tokenforge generate`, ENAT with `tokenforge enat-generate`")
        raise UsageError(f"--generator {args.generator} holds a {type(generator).__name__}, which {what}")
    generator = generator.to(device).eval()
    tokenizer_spec = tokenizer_name(args)
    tokenizer = load_module(tokenizer_spec)
    require_tokenizer(tokenizer, tokenizer_spec)
    tokenizer = tokenizer.to(device).eval()
    rng = torch.Generator(device=device).manual_seed(args.seed)
    labels = labels_for(args, generator, torch.Generator().manual_seed(args.seed)) or [0] * args.n
    steps: int | list[int] = args.steps[0] if len(args.steps) == 1 else args.steps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    all_latents = []
    for start in console.progress(range(0, args.n, args.batch_size), desc="batches"):
        batch = torch.tensor(labels[start: start + args.batch_size], device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            if isinstance(generator, FlowDiT):  # the baseline: one Euler schedule over the full resolution
                latents = generator.generate(batch, steps=args.steps[0], cfg=args.cfg, generator=rng)
            else:
                latents = generator.generate(batch, steps=steps, cfg=args.cfg, num_stages=args.stages, generator=rng)
            images = tokenizer.decode(latents.float())
        save_images(images, out, start)
        all_latents.append(latents.float().cpu())
    np.save(out / "latents.npy", torch.cat(all_latents).numpy())
    (out / "labels.json").write_text(json.dumps(labels))
    image_grid(out, args.n)
    return {"n": args.n, "out": str(out)}


def main(argv: list[str] | None = None) -> int:
    """``tokenforge ecar-generate``; wrong input ends as one line and exit 2 (`tokenforge.errors`)."""
    from tokenforge.failure import one_line

    args = build_parser().parse_args(argv)
    try:
        if args.n < 1 or args.batch_size < 1:
            raise UsageError(f"--n and --batch-size must be >= 1 (got {args.n} and {args.batch_size})")
        summary = run(args)
    except (UsageError, ValueError, FileNotFoundError) as error:
        print(f"tokenforge ecar-generate: {one_line(error)}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0
