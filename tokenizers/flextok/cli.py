"""FlexTok's reconstruct hook: coarse-to-fine reconstructions (`Method.verbs["reconstruct"]`, see method.py).

    tokenforge reconstruct --model CKPT|DIR photo.jpg ... --out rec/ --tokens 1,4,16,64,256 [--size 256]
    tokenforge reconstruct --official flextok --model model.safetensors --official-config vae.json ...
      (vae.json: {"vae_config": "vae/config.json"})

Per image, ``<name>.png`` is a strip: the input, then the reconstruction from the first k tokens for each k.
``metrics.json`` holds PSNR (8-bit, dB) per image and k and the mean per k. Sampling: ``--steps`` Euler steps,
``--guidance`` (APG unless ``--cfg``), fixed ``--seed`` so every k starts from the same noise.

Images are read as the shard writer reads them (`tokenforge.image_files.load_image`). A file that cannot be
read is skipped with one line saying why and listed under ``skipped`` in ``metrics.json``; the rest are written,
and the exit code is 3 when any was skipped (`tokenforge.errors`). ``--size`` must be a size the model takes
(a multiple of its VAE factor x patch, up to its position-embedding grid): others end with one line saying which.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tokenforge.errors import UsageError, exit_code_for
from tokenforge.image_files import load_images, psnr, to_uint8
from tokenforge.methods import VerbRequest


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--tokens takes comma-separated integers like 1,4,16, got {text!r}") from err
    if not ks:
        raise argparse.ArgumentTypeError("--tokens needs at least one k")
    return ks


def size_step_and_max(model) -> tuple[int, int]:
    """(pixels per latent patch, largest square side) that ``model`` can encode and decode."""
    step = int(model.vae.factor) * int(model.encoder.patch_emb.patch)
    grids = [int(g) for m in (model.encoder, model.decoder) for g in m.patch_emb.posembs.shape[-2:]]
    return step, step * min(grids)


def check_size(model, size: int) -> None:
    """`UsageError` (one line) unless ``size`` is a square side this FlexTok takes."""
    step, largest = size_step_and_max(model)
    if size < 1 or size % step or size > largest:
        raise UsageError(f"--size {size}: this FlexTok takes image sides that are multiples of {step} from {step} "
                         f"to {largest} (its VAE factor x patch, up to its position grid); e.g. --size {largest}")


@torch.no_grad()
def reconstruct(model, paths: list[Path], out: Path, ks: list[int], size: int = 256, device: str = "cpu",
                steps: int | None = None, guidance: float | None = None, apg: bool = True, seed: int = 0,
                batch_size: int = 8) -> dict:
    """Write one PNG strip per image and ``metrics.json``; returns the metrics (unreadable files skipped)."""
    model = model.to(device).eval()
    bad = [k for k in ks if not 1 <= k <= model.num_registers]
    if bad:
        raise UsageError(f"--tokens values must be in 1..{model.num_registers} for this FlexTok, got {bad}")
    check_size(model, size)
    out.mkdir(parents=True, exist_ok=True)
    loaded, skipped = load_images(paths, size)
    metrics: dict = {"tokens": ks, "files": {}, "skipped": skipped}
    for start in range(0, len(loaded), batch_size):
        chunk = [p for p, _ in loaded[start:start + batch_size]]
        images = torch.stack([t for _, t in loaded[start:start + batch_size]]).to(device)
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
    metrics["mean"] = {f"psnr_k{k}": float(np.mean([f[f"psnr_k{k}"] for f in files])) if files else None
                       for k in ks}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def reconstruct_verb(request: VerbRequest) -> int:
    """`tokenforge reconstruct` for a FlexTok (`tokenforge.methods.Method.verbs`): strips and PSNR per k."""
    options, args = request.options, request.args
    try:
        ks = parse_ks(options["tokens"])
    except argparse.ArgumentTypeError as error:
        raise UsageError(str(error)) from None
    metrics = reconstruct(request.model, request.inputs, request.out, ks, args.size or 256, request.device,
                          options["steps"], options["guidance"], not options["cfg"], args.seed, args.batch_size)
    print(json.dumps(metrics["mean"]))
    return exit_code_for(len(metrics["skipped"]), len(request.inputs))
