"""`tokenforge bench flextok`: FlexTok encode and decode images/s under ../shared/BENCHMARKS.md's conditions.

Random weights at a released size (``d18-d18``: 1152 wide, 18+18 blocks, c16 SDXL-style VAE), 256 px, warm-up
calls, ``cuda.synchronize`` around the timed region, median of ``--repeats``; fp32 and bf16 (autocast) rows;
peak memory from ``torch.cuda.max_memory_allocated``. Encode = images -> ids (VAE + encoder + FSQ); decode =
ids -> images with ``--steps`` Euler steps at each k, unguided and APG-guided (cond + uncond in one batch).
``--attention`` picks the encoder's register-mask kernel: ``flex`` (compiled FlexAttention with a cached
BlockMask), ``sdpa`` (dense boolean mask, the reference) or ``auto`` (flex on CUDA; the default); the row's
``attention`` says which ran. The decoder is unmasked and always uses SDPA (flash). Only the flex encoder
compiles: its encode row's ``first_call_s`` includes that compile (about 12-21 s at the tiny size on one CPU
core; check the GPU number here, it must stay well under a minute) and a dtype or batch change compiles once
more. Everything else is eager. ``--size tiny`` runs in seconds on a CPU (add ``--attention sdpa`` there to
skip the compile).

    tokenforge bench flextok --batch 32 --ks 1 32 256 --steps 25 --attention flex
    tokenforge bench flextok --batch 32 --ks 1 32 256 --steps 25 --attention sdpa
    tokenforge bench flextok --size tiny --device cpu --batch 2 --repeats 1 --warmup 0
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from tokenforge.tokenizers.flextok.model import FlexTok
from tokenforge.tokenizers.flextok.networks import FlexTokDecoder, FlexTokEncoder, FlexTokVAE
from tokenforge.benchmarking import median_seconds

SIZES: dict[str, dict[str, Any]] = {
    "d12-d12": {"dim": 768, "enc": 12, "dec": 12, "image": 256, "registers": 256, "vae": None},
    "d18-d18": {"dim": 1152, "enc": 18, "dec": 18, "image": 256, "registers": 256, "vae": None},
    "d18-d28": {"dim": 1152, "enc": 18, "dec": 28, "dec_dim": 1792, "image": 256, "registers": 256, "vae": None},
    "tiny": {"dim": 64, "enc": 1, "dec": 1, "image": 32, "registers": 16, "head_dim": 32,
             "vae": {"block_out_channels": [16, 16], "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 16,
                     "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}},
}


def build(size: str) -> FlexTok:
    s = SIZES[size]
    vae = FlexTokVAE(config=s["vae"], scaling_factor=1.0)
    grid = s["image"] // vae.factor // 2
    head = s.get("head_dim", 64)
    enc = FlexTokEncoder(vae.latent_channels, s["dim"], s["enc"], head, s["registers"], 6, grid)
    dec = FlexTokDecoder(vae.latent_channels, s.get("dec_dim", s["dim"]), s["dec"], head, s["registers"], 6, grid)
    return FlexTok(vae, enc, dec)




@torch.no_grad()
def measure(model: FlexTok, batch: int, image: int, device: torch.device, bf16: bool, ks: list[int], steps: int,
            guidance: float, warmup: int, repeats: int, report=None) -> list[dict[str, Any]]:
    images = torch.rand(batch, 3, image, image, device=device) * 2 - 1
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else torch.no_grad
    rows = []

    def run(name: str, fn, **extra: Any) -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with ctx():
            first = time.perf_counter()
            fn()
            first = time.perf_counter() - first
            seconds = median_seconds(fn, device, warmup, repeats)
        row = {"workload": name, "dtype": "bf16" if bf16 else "fp32", "batch": batch, **extra,
               "images_per_s": round(batch / seconds, 2), "first_call_s": round(first, 2)}
        if device.type == "cuda":
            row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
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
    parser.add_argument("--size", choices=list(SIZES), default="d18-d18")
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
    model = build(args.size).to(device).eval()
    model.encoder.attention = args.attention
    attention = model.encoder.backend(device)
    ks = [min(k, model.num_registers) for k in args.ks]
    params = sum(p.numel() for p in model.parameters()) / 1e6

    def report(row: dict[str, Any]) -> None:
        row.update(size=args.size, params_m=round(params, 1), device=str(device), attention=attention)
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    for dtype in args.dtypes:
        measure(model, args.batch, SIZES[args.size]["image"], device, dtype == "bf16", ks, args.steps,
                args.guidance, args.warmup, args.repeats, report=report)
    return 0
