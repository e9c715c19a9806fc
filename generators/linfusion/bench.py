"""`tokenforge bench linfusion`: UNet forward time and peak memory vs resolution, SDPA self-attention vs LinFusion.

The paper's claim measured: an SD-1.5-sized random-weight UNet (``--size sd15``; ``tiny`` for CPU smoke runs),
batch 1, text context 77 tokens, one forward per row (and, with ``--steps N``, an N-step DDIM loop at batch 2 =
CFG), bf16 and/or fp32. Conditions of shared/BENCHMARKS.md: warm-up, ``torch.cuda.synchronize`` around the
timed region, median of ``--repeats``, peak memory. A resolution that runs out of memory is reported as OOM and
larger ones are skipped for that attention. Prints a Markdown table; ``--json PATH`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from tokenforge.generators.linfusion.linfusion import LinFusion
from tokenforge.benchmarking import timed

SIZES = {
    "sd15": dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8),  # diffusers defaults = SD-1.5 blocks
    "tiny": dict(sample_size=16, block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1, cross_attention_dim=32,
                 attention_head_dim=4, norm_num_groups=8),
}






def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def rows_for(unet, attention: str, dtype_name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    from diffusers import DDIMScheduler

    rows: list[dict] = []
    ctx_dim = unet.config.cross_attention_dim
    dtype = getattr(torch, dtype_name)
    for res in args.resolutions:
        latent = res // 8
        row = {"attention": attention, "dtype": dtype_name, "resolution": res, "tokens": latent * latent}
        try:
            x = torch.randn(1, unet.config.in_channels, latent, latent, device=device, dtype=dtype)
            ctx = torch.randn(1, 77, ctx_dim, device=device, dtype=dtype)
            t = torch.tensor([500], device=device)

            def forward() -> None:
                with torch.inference_mode():
                    unet(x, t, ctx)

            row["forward_ms"], row["forward_peak_gib"] = (v * s for v, s in zip(
                timed(forward, device, args.warmup, args.repeats), (1000, 1)))
            if args.steps:
                sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                      beta_end=0.012)

                def loop() -> None:
                    sched.set_timesteps(args.steps)
                    z = x.clone()
                    with torch.inference_mode():
                        for step in sched.timesteps:
                            eps = unet(torch.cat([z, z]), step.to(device), torch.cat([ctx, ctx])).sample
                            uncond, cond = eps.chunk(2)
                            z = sched.step(uncond + 7.5 * (cond - uncond), step, z).prev_sample

                row["steps"] = args.steps
                row["generation_s"], row["generation_peak_gib"] = timed(loop, device, 0, 1)
        except (RuntimeError, torch.OutOfMemoryError) as error:
            if not _is_oom(error):
                raise
            row["forward_ms"] = "OOM"
            rows.append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            break  # larger resolutions will not fit either
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tokenforge bench linfusion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="sd15")
    p.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--dtype", nargs="+", default=["bfloat16"], choices=["bfloat16", "float16", "float32"])
    p.add_argument("--attention", nargs="+", default=["sdpa", "linfusion"], choices=["sdpa", "linfusion"])
    p.add_argument("--chunk-size", type=int, default=None, help="LinFusion token chunk (bounds activation memory)")
    p.add_argument("--steps", type=int, default=0, help="also time an N-step CFG DDIM loop (e.g. 25)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from diffusers import UNet2DConditionModel

    device = torch.device(args.device)
    rows: list[dict] = []
    for dtype_name in args.dtype:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**SIZES[args.size]).to(device=device, dtype=getattr(torch, dtype_name)).eval()
        unet.set_attn_processor(__import__("diffusers").models.attention_processor.AttnProcessor2_0())
        for attention in args.attention:
            lin = LinFusion.construct_for(unet, chunk_size=args.chunk_size) if attention == "linfusion" else None
            rows += rows_for(unet, attention, dtype_name, args, device)
            if lin is not None:
                lin.unmount()
        del unet
    cols = ["attention", "dtype", "resolution", "tokens", "forward_ms", "forward_peak_gib", "generation_s"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "size": args.size, "rows": rows}, f, indent=2)
    return 0
