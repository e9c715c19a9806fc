"""`tokenforge bench tokenflow`: TokenFlow encode (images -> multi-scale ids) and decode (ids -> pixels) images/s.

    tokenforge bench tokenflow --variant clipb_256 --batch 32 --device cuda     # the BENCHMARKS.md row
    tokenforge bench tokenflow --variant tiny --batch 4                          # CPU smoke run

Conditions of shared/BENCHMARKS.md: random weights at a config's size (``--variant clipb_256``:
configs/tokenizers/tokenflow/clipb_256.yaml on its base.yaml, the released file's architecture; ``--model``: any
TokenFlow config or a trained checkpoint), warm-up calls, ``cuda.synchronize``
around the timed region, median of ``--repeats``; a bf16 row (autocast; the quantizer's distances stay fp32)
and an fp32 row; peak memory from ``torch.cuda.max_memory_allocated``. Decode is ``decode(ids)`` (codebook
lookup, bicubic sum, pixel decoder); the official ``decode_code`` also runs the small semantic decoder.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from tokenforge.benchmarking import bench_label, bench_model, median_seconds
from tokenforge.config_models import size_config
from tokenforge.errors import UsageError

VARIANTS = ("clipb_256", "clipb_224", "siglip_384", "small", "tiny")  # configs/tokenizers/tokenflow/<variant>.yaml


def tiny_model() -> Any:
    """A tiny TokenFlow for tests (tiny.yaml's architecture without its training-time scale dropout)."""
    from tokenforge.tokenizers.tokenflow import CLIPVisionTower, DualCodebookQuantizer, SemanticDecoder, TokenFlow

    return TokenFlow(CLIPVisionTower(32, 4, 32, 2, 2), DualCodebookQuantizer(256, 8, 8, [1, 2, 4, 8]),
                     SemanticDecoder(8, 32, 1, 2, 8), 32, ch=32, ch_mult=[1, 2, 2], num_res_blocks=1, z_channels=32)


def build(variant: str, model: str | None = None) -> Any:
    """Random weights at ``configs/tokenizers/tokenflow/<variant>.yaml`` (on its base.yaml; the released sizes have
    the released files' architecture), or ``model``: any TokenFlow config or a trained checkpoint."""
    from tokenforge.tokenizers.tokenflow import TokenFlow

    built = bench_model(model or size_config("tokenizers", "tokenflow", variant))
    if not isinstance(built, TokenFlow):
        raise UsageError(f"{model} is a {type(built).__name__}, not a TokenFlow model")
    return built


@torch.inference_mode()
def measure(model: Any, batch: int, device: torch.device, dtype: torch.dtype, warmup: int = 2,
            repeats: int = 5) -> dict[str, Any]:
    """images/s of encode and decode at ``model.image_size`` for one dtype (bf16 = autocast)."""
    size = model.image_size
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.autocast(**autocast):
        tokens = model.encode(x)
        encode = median_seconds(lambda: model.encode(x), device, warmup, repeats)
        decode = median_seconds(lambda: model.decode(tokens), device, warmup, repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"dtype": "bf16" if dtype == torch.bfloat16 else "fp32", "batch": batch, "image_size": size,
            "tokens": int(sum(model.quantizer.tokens_per_scale)), "encode_images_s": round(batch / encode, 2),
            "decode_images_s": round(batch / decode, 2), "peak_gib": round(peak, 2) if peak is not None else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenforge bench tokenflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, default=None, help="default: clipb_256 on CUDA, tiny on CPU")
    parser.add_argument("--model", default=None, help="a config (YAML size overlay) or a TokenFlow checkpoint")
    parser.add_argument("--batch", type=int, default=None, help="default: 32 on CUDA, 2 on CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", choices=("bf16", "fp32"), default=["bf16", "fp32"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON line per row instead of a table")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    variant = args.variant or ("clipb_256" if device.type == "cuda" else "tiny")
    batch = args.batch or (32 if device.type == "cuda" else 2)
    torch.manual_seed(0)
    model = build(variant, args.model).to(device).eval()
    variant = bench_label(args.model) if args.model else variant
    rows = []
    for name in args.dtypes:
        dtype = torch.bfloat16 if name == "bf16" else torch.float32
        row = {"variant": variant, "device": str(device), **measure(model, batch, device, dtype, args.warmup,
                                                                    args.repeats)}
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        print("| variant | device | dtype | batch | px | tokens | encode img/s | decode img/s | peak GiB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['variant']} | {r['device']} | {r['dtype']} | {r['batch']} | {r['image_size']} | {r['tokens']} "
                  f"| {r['encode_images_s']} | {r['decode_images_s']} | {r['peak_gib']} |")
    return 0
