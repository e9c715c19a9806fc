"""TokenFlow's reconstruct hook (`Method.verbs["reconstruct"]`, see method.py): images through TokenFlow and back.

    tokenforge reconstruct --model DIR|CKPT photo.jpg folder/ --out rec/ [--fit crop|resize|none] [--bf16]
    tokenforge reconstruct --official tokenflow --model tokenflow_clipb_32k_enhanced.pt [--trust-pickle] imgs/ \
        --out rec/

Any image PIL reads is converted to 8-bit RGB first (grayscale, palette, RGBA composited on white, 16-bit
scaled by 1/257; `tokenforge.data.image.to_rgb`), then brought to the model's resolution (``--size``, default
the tokenizer's own): ``--fit crop`` (shorter side resized, centre crop; default), ``resize`` (squashed), or
``none`` (must already be that size). Images smaller than ``--min-side`` are refused with a message.

Writes ``<name>.png`` (input | reconstruction), ``grid.png`` (all pairs), ``ids.npy`` (int32 ``[N, L]``,
every scale's shared ids concatenated coarse-to-fine, rows in the order of ``metrics.json["files"]``) and
``metrics.json`` (PSNR and SSIM per image on the 8-bit images, means, rejected files with reasons). An image
that cannot be used is skipped with one line (``skipped: NAME: reason``); the rest are written, and the exit
code is 3 when any was skipped (`tokenforge.errors`).
``--trust-pickle`` allows official training checkpoints that pickle ``args`` (unpickling can run code).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tokenforge.errors import exit_code_for
from tokenforge.image_files import to_uint8
from tokenforge.methods import VerbRequest

FITS = ("crop", "resize", "none")


def load_rgb(path: Path, size: int, fit: str = "crop", min_side: int = 16) -> torch.Tensor:
    """Any image file -> ``[3, size, size]`` float in [-1, 1]; ValueError with the reason when it cannot be used."""
    from tokenforge.data.image import read_rgb
    from tokenforge.data.shards import Rejected

    try:
        image = read_rgb(path)  # the shard writer's reader and conversion
    except (Rejected, OSError) as error:
        raise ValueError(f"{path.name}: not a readable image ({error})") from None
    if min(image.size) < min_side:
        raise ValueError(f"{path.name}: {image.width}x{image.height} is smaller than --min-side {min_side}; "
                         "pass a smaller --min-side to upscale it anyway")
    if fit == "none":
        if image.size != (size, size):
            raise ValueError(f"{path.name}: {image.width}x{image.height}, but --fit none needs {size}x{size}")
    elif fit == "resize":
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    else:
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                             Image.Resampling.BICUBIC)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def image_metrics(original: torch.Tensor, recon: torch.Tensor) -> dict[str, float]:
    """PSNR (dB) and SSIM of two [-1, 1] images after 8-bit conversion (scikit-image, data range 255)."""
    from skimage.metrics import structural_similarity

    a, b = to_uint8(original), to_uint8(recon)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    psnr = float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)
    ssim = float(structural_similarity(a, b, channel_axis=2, data_range=255))
    return {"psnr_db": round(psnr, 3), "ssim": round(ssim, 4)}


@torch.no_grad()
def reconstruct(model: Any, paths: list[Path], out: Path, size: int | None = None, fit: str = "crop",
                min_side: int = 16, device: str = "cpu", batch_size: int = 8,
                dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Encode/decode ``paths``; write pairs, ``grid.png``, ``ids.npy`` and ``metrics.json`` into ``out``."""
    model = model.to(device).eval()
    size = size or model.image_size
    out.mkdir(parents=True, exist_ok=True)
    images, names, rejected = [], [], {}
    for path in paths:
        try:
            images.append(load_rgb(path, size, fit, min_side))
            names.append(path)
        except ValueError as error:
            rejected[path.name] = str(error)
            print(f"skipped: {error}", file=sys.stderr)  # one line per unreadable file; the others go on
    files: dict[str, Any] = {}
    pairs, all_ids = [], []
    for start in range(0, len(images), batch_size):
        x = torch.stack(images[start:start + batch_size]).to(device)
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
            tokens = model.encode(x)
            x_hat = model.decode(tokens).float()
        all_ids.append(torch.cat(tokens.ids, dim=1).cpu())
        for path, original, recon in zip(names[start:start + batch_size], x, x_hat):
            pair = np.concatenate([to_uint8(original), to_uint8(recon)], axis=1)
            Image.fromarray(pair).save(out / f"{path.stem}.png")
            pairs.append(pair)
            files[path.name] = image_metrics(original, recon)
    if pairs:
        Image.fromarray(np.concatenate(pairs, axis=0)).save(out / "grid.png")
        np.save(out / "ids.npy", torch.cat(all_ids).numpy().astype(np.int32))
    summary = {
        "size": size, "fit": fit, "tokens_per_image": int(sum(model.quantizer.tokens_per_scale)),
        "scales": list(model.quantizer.scales), "files": files, "rejected": rejected,
        "mean_psnr_db": round(float(np.mean([f["psnr_db"] for f in files.values()])), 3) if files else None,
        "mean_ssim": round(float(np.mean([f["ssim"] for f in files.values()])), 4) if files else None,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def reconstruct_verb(request: VerbRequest) -> int:
    """`tokenforge reconstruct` for a TokenFlow (`tokenforge.methods.Method.verbs`): pairs, grid, ids, PSNR/SSIM."""
    options, args = request.options, request.args
    summary = reconstruct(request.model, request.inputs, request.out, args.size, options["fit"],
                          options["min_side"], request.device, args.batch_size,
                          torch.bfloat16 if args.bf16 else torch.float32)
    counts = {"images": len(summary["files"]), "rejected": len(summary["rejected"]), "out": str(request.out)}
    print(json.dumps({k: summary[k] for k in ("size", "mean_psnr_db", "mean_ssim", "tokens_per_image")} | counts))
    return exit_code_for(len(summary["rejected"]), len(request.inputs))
