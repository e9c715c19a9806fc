"""`tokenforge bench flextok`: FlexTok encode and decode images/s under ../shared/BENCHMARKS.md's conditions.

Random weights at a config's size (``--size d18-d18``: configs/tokenizers/flextok/d18_d18.yaml on its base.yaml, a
released size: 1152 wide, 18+18 blocks, c16 SDXL-style VAE, 256 px; ``--model``: any FlexTok config or a trained
checkpoint; ``--image`` changes the input size), warm-up
calls, ``cuda.synchronize`` around the timed region, median of ``--repeats``; fp32 and bf16 (autocast) rows;
peak memory from ``torch.cuda.max_memory_allocated``. Encode = images -> ids (VAE + encoder + FSQ); decode =
ids -> images with ``--steps`` Euler steps at each k, unguided and APG-guided (cond + uncond in one batch).
``--attention`` picks the encoder's register-mask kernel: ``flex`` (compiled FlexAttention with a cached
BlockMask), ``sdpa`` (dense boolean mask, the reference) or ``auto`` (flex on CUDA; the default); the row's
``attention`` says which ran. The decoder is unmasked and always uses SDPA (flash). Only the flex encoder
compiles: its encode row's ``first_call_s`` includes that compile (about 12-21 s at the tiny size on one CPU
core; check the GPU number here, it must stay well under a minute) and a dtype or batch change compiles once
more. Everything else is eager. ``--size tiny`` (configs' tiny.yaml, 16 px) runs in seconds on a CPU (add ``--attention sdpa`` there to
skip the compile).

    tokenforge bench flextok --batch 32 --ks 1 32 256 --steps 25 --attention flex
    tokenforge bench flextok --batch 32 --ks 1 32 256 --steps 25 --attention sdpa
    tokenforge bench flextok --size tiny --device cpu --batch 2 --repeats 1 --warmup 0
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from tokenforge.benchmarking import bench_label, bench_model, first_and_median, is_config
from tokenforge.config_models import data_args, size_config
from tokenforge.errors import UsageError
from tokenforge.tokenizers.flextok.model import FlexTok

SIZES = ("d12-d12", "d18-d18", "d18-d28", "small", "tiny")  # configs/tokenizers/flextok/<size, _ for ->.yaml
DEFAULT_IMAGE = 256  # input size when --model is a checkpoint and --image is not given


def build(size: str, model: str | None = None) -> tuple[FlexTok, int]:
    """(model, image size): random weights at a size's config (on its base.yaml) or ``model`` (any FlexTok config,
    or a trained checkpoint); the image size is the config's data.image_size."""
    config = model or size_config("tokenizers", "flextok", size.replace("-", "_"))
    built = bench_model(config)
    if not isinstance(built, FlexTok):
        raise UsageError(f"{model} is a {type(built).__name__}, not a FlexTok model")
    return built, (data_args(config).get("image_size") if is_config(config) else None) or DEFAULT_IMAGE


@torch.no_grad()
def measure(model: FlexTok, batch: int, image: int, device: torch.device, bf16: bool, ks: list[int], steps: int,
            guidance: float, warmup: int, repeats: int, report=None) -> list[dict[str, Any]]:
    images = torch.rand(batch, 3, image, image, device=device) * 2 - 1
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else torch.no_grad
    rows = []

    def run(name: str, fn, **extra: Any) -> None:
        with ctx():
            timing = first_and_median(fn, device, warmup, repeats)
        row = {"workload": name, "dtype": "bf16" if bf16 else "fp32", "batch": batch, **extra,
               "images_per_s": round(batch / timing.pop("seconds"), 2),
               "first_call_s": round(timing.pop("first_call_s"), 2), **timing}
        rows.append(row)
        if report is not None:  # print as we go: a long table cut by a timeout still says something
            report(row)

    run("encode", lambda: model.encode(images))
    with ctx():
        tokens = model.encode(images)
    for k in ks:
        for g in (1.0, guidance):
            run("decode", lambda k=k, g=g: model.decode(tokens, k=k, steps=steps, guidance_scale=g, apg=True),
                k=k, steps=steps, guidance=g)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenforge bench flextok", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="d18-d18", help="a config's size (d18-d18: d18_d18.yaml)")
    parser.add_argument("--model", default=None, help="a config (YAML size overlay) or a FlexTok checkpoint")
    parser.add_argument("--image", type=int, default=None, help="input size in pixels (default: the config's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5, help="APG scale of the guided rows (7.5)")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["bf16", "fp32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--attention", choices=["auto", "flex", "sdpa"], default="auto",
                        help="encoder register-mask kernel: flex (BlockMask), sdpa (dense mask), auto (flex on CUDA)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # honest fp32 rows
    model, image = build(args.size, args.model)
    model, image = model.to(device).eval(), args.image or image
    label = bench_label(args.model) if args.model else args.size
    model.encoder.attention = args.attention
    attention = model.encoder.backend(device)
    ks = [min(k, model.num_registers) for k in args.ks]
    params = sum(p.numel() for p in model.parameters()) / 1e6

    def report(row: dict[str, Any]) -> None:
        row.update(size=label, params_m=round(params, 1), device=str(device), attention=attention)
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    for dtype in args.dtypes:
        measure(model, args.batch, image, device, dtype == "bf16", ks, args.steps,
                args.guidance, args.warmup, args.repeats, report=report)
    return 0
