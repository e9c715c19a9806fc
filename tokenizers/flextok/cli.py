"""`tokenforge flextok`: coarse-to-fine reconstructions with a FlexTok model.

    tokenforge flextok reconstruct --model CKPT|DIR photo.jpg ... --out rec/ --tokens 1,4,16,64,256 [--size 256]
    tokenforge flextok reconstruct --official model.safetensors --vae-config vae/config.json ...

Per image, ``<name>.png`` is a strip: the input, then the reconstruction from the first k tokens for each k.
``metrics.json`` holds PSNR (8-bit, dB) per image and k and the mean per k. Sampling: ``--steps`` Euler steps,
``--guidance`` (APG unless ``--cfg``), fixed ``--seed`` so every k starts from the same noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tokenforge.reconstruct import load_image, psnr, to_uint8


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--tokens takes comma-separated integers like 1,4,16, got {text!r}") from err
    if not ks:
        raise argparse.ArgumentTypeError("--tokens needs at least one k")
    return ks


@torch.no_grad()
def reconstruct(model, paths: list[Path], out: Path, ks: list[int], size: int = 256, device: str = "cpu",
                steps: int | None = None, guidance: float | None = None, apg: bool = True, seed: int = 0,
                batch_size: int = 8) -> dict:
    """Write one PNG strip per image and ``metrics.json``; returns the metrics."""
    model = model.to(device).eval()
    bad = [k for k in ks if not 1 <= k <= model.num_registers]
    if bad:
        raise ValueError(f"--tokens values must be in 1..{model.num_registers}, got {bad}")
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"tokens": ks, "files": {}}
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = torch.stack([load_image(p, size) for p in chunk]).to(device)
        tokens = model.encode(images)
        noise = torch.randn((len(chunk), *tokens.meta["latent_shape"]),
                            generator=torch.Generator().manual_seed(seed + start)).to(device)
        recs = {k: model.vae.decode(model.decode_latents(tokens.ids, k=k, noise=noise, steps=steps,
                                                         guidance_scale=guidance, apg=apg)).clamp(-1, 1) for k in ks}
        for i, path in enumerate(chunk):
            strip = np.concatenate([to_uint8(images[i])] + [to_uint8(recs[k][i]) for k in ks], axis=1)
            Image.fromarray(strip).save(out / f"{path.stem}.png")
            metrics["files"][path.name] = {f"psnr_k{k}": psnr(images[i], recs[k][i]) for k in ks}
    files = metrics["files"].values()
    metrics["mean"] = {f"psnr_k{k}": float(np.mean([f[f"psnr_k{k}"] for f in files])) for k in ks}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenforge flextok", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("reconstruct", help="PNG strips of coarse-to-fine reconstructions + PSNR per k")
    source = rec.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="tokenforge checkpoint (folder, .ckpt or name)")
    source.add_argument("--official", help="official FlexTok model.safetensors (or its folder)")
    rec.add_argument("--vae-config", help="diffusers config.json of the VAE (with --official)")
    rec.add_argument("files", nargs="+", type=Path)
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--tokens", type=parse_ks, default=[1, 4, 16, 64, 256])
    rec.add_argument("--size", type=int, default=256)
    rec.add_argument("--steps", type=int)
    rec.add_argument("--guidance", type=float)
    rec.add_argument("--cfg", action="store_true", help="plain CFG instead of APG")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    from tokenforge.hub import from_official, from_pretrained

    if args.model:
        model = from_pretrained(args.model)
    else:
        model = from_official("flextok", args.official, {"vae_config": args.vae_config} if args.vae_config else None)
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        parser.error(f"no such image file(s): {', '.join(missing)}")
    metrics = reconstruct(model, args.files, args.out, args.tokens, args.size, args.device, args.steps,
                          args.guidance, not args.cfg, args.seed)
    print(json.dumps(metrics["mean"]))
    return 0
