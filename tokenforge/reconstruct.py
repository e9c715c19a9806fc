"""`tokenforge reconstruct`: encode and decode files with a tokenizer and write what comes back.

    tokenforge reconstruct --model DIR|CKPT|NAME photo.jpg other.png --out rec/ [--size 256]
    tokenforge reconstruct --model DIR speech.flac --out rec/

Tokenizers with their own reconstruct command (TokenFlow, FlexTok, VAT) are handed to it with every option
given here, so ``tokenforge reconstruct --model FLEXTOK_DIR a.png --tokens 1,16,256`` is the same as
``tokenforge flextok reconstruct ...`` and 3D meshes go through ``tokenforge vat reconstruct``.

Images: each output PNG shows the input (centre crop) beside its reconstruction, plus ``grid.png`` of all of
them; audio: the reconstruction as FLAC at the tokenizer's sample rate. ``metrics.json`` holds PSNR (images)
or the audio metrics per file and the token count. Images are read as the shard writer reads them
(`tokenforge.data.image.read_rgb`: 16-bit, palette and transparent files converted the same way).

A file that cannot be read is skipped with one line saying why (``skipped: NAME: reason`` on stderr, and under
``skipped`` in ``metrics.json``); the others are still reconstructed and written. Exit code 0, or 3 when any
input was skipped (`tokenforge.errors`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tokenforge import console
from tokenforge.devices import resolve_device
from tokenforge.errors import UsageError, exit_code_for
from tokenforge.metrics.image import psnr, to_uint8  # noqa: F401  (re-exported: reconstruct.psnr)
from tokenforge.model_kind import require_tokenizer

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (by suffix, recursively, sorted)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class UnreadableInput(ValueError):
    """An input file that cannot be used; the message is the one-line reason (starting with the file name)."""


def load_image(path: Path, size: int) -> torch.Tensor:
    """``[3, size, size]`` in [-1, 1]: read as the shard writer does (`tokenforge.data.image.read_rgb`), then the
    shard reader's evaluation transform (short side resized to ``size``, bicubic, centre crop).

    Raises `UnreadableInput` with the reason for an empty, unknown or corrupt file.
    """
    from tokenforge.data.image import read_rgb, transform
    from tokenforge.data.shards import Rejected

    try:
        image = read_rgb(path)
    except Rejected as error:
        raise UnreadableInput(f"{Path(path).name}: {error}") from None
    except OSError as error:  # unreadable from disk (permissions, a folder, vanished)
        raise UnreadableInput(f"{Path(path).name}: cannot read ({error.strerror or error})") from None
    return transform(image, size, train=False, random_crop=False, hflip=False, rng=random.Random(0))


def load_images(paths: list[Path], size: int) -> tuple[list[tuple[Path, torch.Tensor]], dict[str, str]]:
    """The readable images as ``(path, tensor)`` and ``{name: reason}`` for the others, each printed as one line."""
    loaded, skipped = [], {}
    for path in paths:
        try:
            loaded.append((path, load_image(path, size)))
        except UnreadableInput as error:
            skipped[path.name] = str(error)
            print(f"skipped: {error}", file=sys.stderr)
    return loaded, skipped


@torch.no_grad()
def reconstruct_images(model: Any, paths: list[Path], out: Path, size: int = 256, device: str = "cpu",
                       batch_size: int = 8) -> dict[str, Any]:
    """Encode/decode ``paths`` with a tokenizer (module or checkpoint path); write PNGs and metrics.json."""
    from tokenforge.hub import from_pretrained

    tokenizer = from_pretrained(model) if isinstance(model, (str, Path)) else model
    tokenizer = tokenizer.to(device).eval()
    out.mkdir(parents=True, exist_ok=True)
    loaded, skipped = load_images(paths, size)
    metrics: dict[str, Any] = {"files": {}, "skipped": skipped}
    pairs = []
    for start in console.progress(range(0, len(loaded), batch_size), desc="reconstruct", unit="batch"):
        chunk = [p for p, _ in loaded[start:start + batch_size]]
        x = torch.stack([t for _, t in loaded[start:start + batch_size]]).to(device)
        tokens = tokenizer.encode(x)
        x_hat = tokenizer.decode(tokens).float()
        ids = tokens.ids if tokens.ids is not None else tokens.latents
        per_item = sum(t[0].numel() for t in ids) if isinstance(ids, list) else ids[0].numel()
        for path, original, recon in zip(chunk, x, x_hat):
            pair = np.concatenate([to_uint8(original), to_uint8(recon)], axis=1)
            Image.fromarray(pair).save(out / f"{path.stem}.png")
            pairs.append(pair)
            metrics["files"][path.name] = {"psnr_db": round(psnr(original, recon), 3), "tokens": int(per_item)}
    if pairs:
        Image.fromarray(np.concatenate(pairs, axis=0)).save(out / "grid.png")
    values = [m["psnr_db"] for m in metrics["files"].values()]
    metrics["mean_psnr_db"] = round(float(np.mean(values)), 3) if values else None
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return {"out": str(out), "mean_psnr_db": metrics["mean_psnr_db"], "files": len(values), "skipped": len(skipped)}


def reconstruct_audio(model: Any, paths: list[Path], out: Path, device: str = "cpu") -> dict[str, Any]:
    """Encode/decode audio files at the tokenizer's rate (mono mix, resampling, chunking, refusals with a reason);
    write FLAC, codes and metrics.json. See `tokenforge.audio_files.reconstruct_files`."""
    from tokenforge.audio_files import reconstruct_files
    from tokenforge.hub import from_pretrained

    tokenizer = from_pretrained(model) if isinstance(model, (str, Path)) else model
    return reconstruct_files(tokenizer.to(device).eval(), paths, out)


def dedicated_command(argv: list[str]) -> str | None:
    """The module of a method's own reconstruct command (`Method.reconstruct`) for ``--model``'s class, or None for
    the generic path."""
    model = next((a.split("=", 1)[1] for a in argv if a.startswith("--model=")), None)
    if model is None and "--model" in argv and argv.index("--model") + 1 < len(argv):
        model = argv[argv.index("--model") + 1]
    if model is None:
        return None
    from tokenforge.hub import CheckpointError, class_path_of
    from tokenforge.methods import method_of

    try:
        method = method_of(class_path_of(model))
    except (CheckpointError, FileNotFoundError, KeyError):
        return None  # the generic path below reports what is wrong with --model
    return method.reconstruct if method is not None else None


def main(argv: list[str] | None = None) -> int:
    import importlib
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    module = dedicated_command(argv)
    if module is not None:
        return importlib.import_module(module).main(["reconstruct", *argv])
    parser = argparse.ArgumentParser(prog="tokenforge reconstruct", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="tokenizer: folder, fit .ckpt, or name in $TOKENFORGE_HOME")
    parser.add_argument("inputs", nargs="+", type=Path, help="image or audio files (or folders of them)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the reconstructions")
    parser.add_argument("--size", type=int, default=256, help="image side after centre crop (default 256)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present, else cpu)")
    args = parser.parse_args(argv)
    if args.size < 1:
        raise UsageError(f"--size {args.size}: the image side must be a positive number of pixels (e.g. 256)")
    device = str(resolve_device(args.device))

    files = []
    for item in args.inputs:
        files.extend(sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item])
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        parser.error(f"not found: {', '.join(missing)}")
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    audio = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
    if not images and not audio:
        parser.error(f"no image ({', '.join(sorted(IMAGE_SUFFIXES))}) or audio "
                     f"({', '.join(sorted(AUDIO_SUFFIXES))}) files given")
    from tokenforge.hub import from_pretrained

    tokenizer = from_pretrained(args.model)
    require_tokenizer(tokenizer, args.model)
    skipped = 0
    if images:
        if tokenizer.modality != "image":
            raise UsageError(f"{args.model} is a {tokenizer.modality} tokenizer; it cannot reconstruct images")
        summary = reconstruct_images(tokenizer, images, args.out, args.size, device)
        skipped += summary["skipped"]
        print(json.dumps(summary))
    if audio:
        if tokenizer.modality != "audio":
            raise UsageError(f"{args.model} is a {tokenizer.modality} tokenizer; it cannot reconstruct audio")
        summary = reconstruct_audio(tokenizer, audio, args.out, device)
        skipped += summary["rejected"]
        print(json.dumps(summary))
    return exit_code_for(skipped, len(images) + len(audio))
