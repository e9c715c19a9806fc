"""Image files for the tokenizer verbs: read as the shard writer reads them, write reconstructions.

Images are read by `tokenforge.data.image.read_rgb` (16-bit, palette and transparent files converted the same
way as in shards), then brought to ``size`` x ``size`` by the shard reader's evaluation transform (short side
resized, bicubic, centre crop) and scaled to [-1, 1]. A file that cannot be used raises `UnreadableInput` with a
one-line reason that starts with the file name.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenforge.metrics.image import psnr, to_uint8

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


class UnreadableInput(ValueError):
    """An input file that cannot be used; the message is the one-line reason (starting with the file name)."""


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (by suffix, recursively, sorted)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> Any:
    """The RGB PIL image of ``path``; `UnreadableInput` for an empty, unknown or corrupt file."""
    from tokenforge.data.image import read_rgb
    from tokenforge.data.shards import Rejected

    try:
        return read_rgb(path)
    except Rejected as error:
        raise UnreadableInput(f"{Path(path).name}: {error}") from None
    except OSError as error:  # unreadable from disk (permissions, a folder, vanished)
        raise UnreadableInput(f"{Path(path).name}: cannot read ({error.strerror or error})") from None


def to_tensor(image: Any, size: int) -> torch.Tensor:
    """A PIL image -> ``[3, size, size]`` in [-1, 1] by the shard reader's evaluation transform."""
    from tokenforge.data.image import transform

    return transform(image, size, train=False, random_crop=False, hflip=False, rng=random.Random(0))


def load_image(path: Path, size: int) -> torch.Tensor:
    """``[3, size, size]`` in [-1, 1] (`read_image`, then `to_tensor`)."""
    return to_tensor(read_image(path), size)


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


def save_image(image: torch.Tensor, path: Path) -> None:
    """A ``[3, H, W]`` image in [-1, 1] as an 8-bit PNG."""
    from PIL import Image

    Image.fromarray(to_uint8(image)).save(path)


def save_pair(original: torch.Tensor, recon: torch.Tensor, path: Path) -> np.ndarray:
    """Input beside reconstruction as one PNG; returns the pixels (for a grid)."""
    from PIL import Image

    pair = np.concatenate([to_uint8(original), to_uint8(recon)], axis=1)
    Image.fromarray(pair).save(path)
    return pair


__all__ = ["IMAGE_SUFFIXES", "UnreadableInput", "image_files", "load_image", "load_images", "psnr", "read_image",
           "save_image", "save_pair", "to_uint8"]
