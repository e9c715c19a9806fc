"""`tokenforge bench linfusion`: UNet forward time and peak memory vs resolution, SDPA self-attention vs LinFusion.

The paper's claim measured: a random-weight teacher UNet at a config's size (``--size sd15``: configs/generators/
linfusion/sd15.yaml, the UNet of its ``base`` folder, or SD-1.5's blocks when that folder is absent; ``sd21``
needs its folder or ``--base``; ``tiny``: tiny.yaml's random teacher, for CPU smoke runs; ``--model``: any
LinFusion config),
batch 1, text context 77 tokens, one forward per cell (and, with ``--steps N``, an N-step CFG DDIM loop at
batch 2), bf16 by default. Conditions of shared/BENCHMARKS.md: warm-up, ``torch.cuda.synchronize`` around the
timed region, median of ``--repeats``, peak memory (``max_memory_allocated``).

Per cell: an out-of-memory error is caught and reported (larger sizes of that series are then skipped); a cell
whose extrapolated time (quadratic in pixels for SDPA, linear for LinFusion, from the previous measured size)
exceeds ``--max-predicted-s`` is reported as "skipped (predicted N s)"; a cell predicted above ``--slow-s`` runs
once without warm-up. ``--json PATH --append`` merges into an existing result file, so a script can run each
resolution in its own process under ``timeout`` and record a kill with ``--mark ATTENTION RESOLUTION TEXT``.
Options for speed: ``--channels-last`` (UNet and input), ``--compile`` (``torch.compile`` of the UNet after
mounting; labels get ``+compile``), ``--chunk-size`` (LinFusion token chunks, bounds activation memory).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from tokenforge.benchmarking import bench_label, is_config, timed
from tokenforge.config_models import compose, size_config
from tokenforge.errors import UsageError
from tokenforge.generators.linfusion.bench_table import Row, blocked, merge, predict_seconds, render
from tokenforge.generators.linfusion.linfusion import LinFusion

SIZES = ("sd15", "sd21", "tiny")  # configs/generators/linfusion/<size>.yaml (with its base.yaml)
# SD-1.5's UNet when sd15.yaml's `base` folder is not on this machine: diffusers' defaults are its blocks
SD15_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)


def unet_config(config: str | Path, size: str | None = None, base: str | None = None) -> dict[str, Any]:
    """The teacher UNet's architecture a LinFusion config names: the ``unet`` folder of ``base`` when given, else
    the config's random ``tiny`` teacher, else the ``unet`` folder of its ``base`` (a local diffusers Stable
    Diffusion folder), else SD-1.5's blocks for ``sd15``."""
    if not is_config(config) and not base:
        raise UsageError(f"--model {config}: the LinFusion bench needs a config (the teacher UNet's architecture); "
                         "a LinFusion checkpoint holds only the linear-attention modules")
    spec = {"base": base} if base else (compose(config).get("model") or {}).get("init_args") or {}
    if spec.get("tiny"):
        return dict(spec["tiny"]["unet"])
    unet = Path(str(spec.get("base", ""))) / "unet" / "config.json"
    if unet.is_file():
        return {k: v for k, v in json.loads(unet.read_text()).items() if not k.startswith("_")}
    if size == "sd15":
        return dict(SD15_UNET)
    raise UsageError(f"{config}: model.init_args.base {spec.get('base')!r} has no unet/config.json; pass a local "
                     "diffusers Stable Diffusion folder with --base")


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def label(attention: str, args: argparse.Namespace) -> str:
    return (attention + ("+channels_last" if args.channels_last else "") + ("+ffchunk" if args.ff_chunk_size else "")
            + ("+compile" if args.compile else ""))


def build_unet(size: str, dtype: torch.dtype, device: torch.device, channels_last: bool, ff_chunk_size: int = 0,
               model: str | None = None, base: str | None = None):
    """Random-weight UNet (seed 0) at a size's config (``model``: any LinFusion config; ``base``: a diffusers folder
    overriding the config's) built directly on ``device``, SDPA processors everywhere; ``ff_chunk_size`` runs every
    transformer feed-forward over token chunks of that size (official low-VRAM 16K recipe)."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    torch.manual_seed(0)
    with torch.device(device):
        config = model or size_config("generators", "linfusion", size)
        unet = UNet2DConditionModel(**unet_config(config, None if model else size, base))
    unet = unet.to(dtype=dtype).eval().requires_grad_(False)
    unet.set_attn_processor(AttnProcessor2_0())
    if ff_chunk_size:
        for module in unet.modules():
            if hasattr(module, "set_chunk_feed_forward") and hasattr(module, "ff"):
                module.set_chunk_feed_forward(ff_chunk_size, 1)
    return unet.to(memory_format=torch.channels_last) if channels_last else unet


def measure(model, unet_config, res: int, dtype: torch.dtype, device: torch.device, warmup: int, repeats: int,
            channels_last: bool, steps: int) -> dict[str, Any]:
    """Forward (and optionally CFG-loop) time and peak memory at one resolution."""
    latent = res // 8
    x = torch.randn(1, unet_config.in_channels, latent, latent, device=device, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    ctx = torch.randn(1, 77, unet_config.cross_attention_dim, device=device, dtype=dtype)
    t = torch.tensor([500], device=device)

    def forward() -> None:
        with torch.inference_mode():
            model(x, t, ctx)

    seconds, peak = timed(forward, device, warmup, repeats)
    out: dict[str, Any] = {"forward_ms": seconds * 1000, "peak_gib": peak}
    if steps:
        from diffusers import DDIMScheduler

        sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012)

        def loop() -> None:
            sched.set_timesteps(steps)
            z = x.clone()
            with torch.inference_mode():
                for step in sched.timesteps:
                    eps = model(torch.cat([z, z]), step.to(device), torch.cat([ctx, ctx])).sample
                    uncond, cond = eps.chunk(2)
                    z = sched.step(uncond + 7.5 * (cond - uncond), step, z).prev_sample

        out["steps"] = steps
        out["generation_s"], out["generation_peak_gib"] = timed(loop, device, 0, 1)
    return out


def run_series(unet, attention: str, dtype_name: str, args: argparse.Namespace, device: torch.device,
               rows: list[Row]) -> list[Row]:
    """All resolutions for one attention; appends to and returns ``rows``."""
    dtype = getattr(torch, dtype_name)
    name = label(attention, args)
    lin = LinFusion.construct_for(unet, chunk_size=args.chunk_size) if attention == "linfusion" else None
    model = unet
    if args.compile:
        torch._dynamo.reset()
        model = torch.compile(unet)
    try:
        for res in args.resolutions:
            row: Row = {"attention": name, "dtype": dtype_name, "resolution": res, "tokens": (res // 8) ** 2}
            reason = blocked(rows, name, dtype_name, res, args.max_predicted_s)
            if reason is not None:
                rows.append({**row, "status": reason})
                continue
            predicted = predict_seconds(rows, name, dtype_name, res)
            slow = predicted is not None and predicted > args.slow_s
            warmup, repeats = (0, 1) if slow else (args.warmup, args.repeats)
            try:
                row.update(measure(model, unet.config, res, dtype, device, warmup, repeats, args.channels_last,
                                   args.steps if res <= args.steps_max_res else 0))
                row["status"] = "ok"
                if slow:
                    row["note"] = f"single run (predicted {predicted:.0f} s)"
            except Exception as error:  # noqa: BLE001 - only OOM is recorded, the rest re-raised
                if not _is_oom(error):
                    raise
                row["status"] = "OOM"
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
            print(f"bench linfusion: {row}", file=sys.stderr, flush=True)
    finally:
        if lin is not None:
            lin.unmount()
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokenforge bench linfusion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="sd15", help="a config's teacher UNet (sd15)")
    p.add_argument("--model", default=None, help="a LinFusion config (YAML size overlay) instead of --size")
    p.add_argument("--base", default=None, help="a local diffusers Stable Diffusion folder: its UNet's architecture")
    p.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--dtype", nargs="+", default=["bfloat16"], choices=["bfloat16", "float16", "float32"])
    p.add_argument("--attention", nargs="+", default=["sdpa", "linfusion"], choices=["sdpa", "linfusion"])
    p.add_argument("--chunk-size", type=int, default=None, help="LinFusion token chunk (bounds activation memory)")
    p.add_argument("--channels-last", action="store_true", help="UNet weights and input in channels_last")
    p.add_argument("--ff-chunk-size", type=int, default=0,
                   help="feed-forward token chunk (must divide every level's token count, e.g. 65536 at 16384 px)")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (after mounting LinFusion)")
    p.add_argument("--steps", type=int, default=0, help="also time an N-step CFG DDIM loop (e.g. 25)")
    p.add_argument("--steps-max-res", type=int, default=1024, help="run the --steps loop only up to this size")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-predicted-s", type=float, default=60.0, help="skip a cell predicted slower than this")
    p.add_argument("--slow-s", type=float, default=10.0, help="a cell predicted slower than this runs once, no warm-up")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="write the rows here (with --append: merge into the rows already there)")
    p.add_argument("--append", action="store_true", help="read earlier rows from --json first (skip rules use them)")
    p.add_argument("--table", action="store_true", help="only print the table of the rows in --json")
    p.add_argument("--mark", nargs=3, metavar=("ATTENTION", "RESOLUTION", "TEXT"),
                   help="only record a note row (e.g. 'timeout after 120 s') for the first --dtype, then print")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    bad = [r for r in args.resolutions if r % 64 or r <= 0]
    if bad:
        print(f"tokenforge bench linfusion: resolutions must be positive multiples of 64, got {bad}", file=sys.stderr)
        return 2
    path = Path(args.json) if args.json else None
    previous: list[Row] = []
    if args.append and path is not None and path.is_file():
        previous = json.loads(path.read_text())["rows"]
    device = torch.device(args.device)
    if args.table:
        if path is None or not path.is_file():
            print(f"tokenforge bench linfusion: --table needs an existing --json file, got {path}", file=sys.stderr)
            return 2
        print(render(json.loads(path.read_text())["rows"]))
        return 0
    if args.mark:
        attention, res, text = args.mark
        new = [{"attention": attention, "dtype": args.dtype[0], "resolution": int(res), "tokens": (int(res) // 8) ** 2,
                "status": text}]
    else:
        rows = list(previous)
        for dtype_name in args.dtype:
            unet = build_unet(args.size, getattr(torch, dtype_name), device, args.channels_last, args.ff_chunk_size,
                              args.model, args.base)
            print(f"teacher UNet {bench_label(args.model) if args.model else args.size} "
                  f"({sum(p.numel() for p in unet.parameters()) / 1e6:.1f} M params), {dtype_name}", flush=True)
            for attention in args.attention:
                run_series(unet, attention, dtype_name, args, device, rows)
            del unet
            if device.type == "cuda":
                torch.cuda.empty_cache()
        new = rows[len(previous):]
    rows = merge(previous, new)
    print(render(rows))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
                "size": bench_label(args.model) if args.model else args.size, "torch": torch.__version__}
        clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]  # NaN
        path.write_text(json.dumps({**info, "rows": clean}, indent=2) + "\n")
    return 0
