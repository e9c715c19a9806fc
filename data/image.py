"""Images: any PIL-readable file -> RGB ``jpg``/``png`` sample; and back to a [-1,1] tensor with crops/flips.

Writing (`prepare`): EXIF orientation applied; L/LA/P/PA/RGBA/CMYK/16-bit/float converted to 8-bit RGB
(transparent pixels composited on white, 16-bit scaled by 1/257, float images taken as [0,1] when their
maximum is at most 1, else [0,255]); optional resize so the longer side is at most ``max_side``; tiny images
(shorter side < ``min_side``) are rejected. Reading (`decode`): resize the shorter side to ``image_size``,
crop (random in training, centre otherwise), random horizontal flip in training, float32 [3,H,W] in [-1,1].
"""

from __future__ import annotations

import io
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from tokenforge.data.shards import EpochSeed, Rejected, WorkerRandom

MODALITY = "image"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".tga")
FORMATS = ("jpg", "png")
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail, not decode half grey


def check_options(max_side: int | None = None, format: str = "jpg", quality: int = 95,
                  min_side: int = 8) -> dict[str, Any]:
    if format not in FORMATS:
        raise ValueError(f"image format {format!r}: choose jpg or png")
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality {quality} must be in 1..100")
    return {"max_side": max_side, "format": format, "quality": quality, "min_side": min_side}


def describe(options: dict[str, Any]) -> dict[str, Any]:
    return {"image_format": options["format"]}


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode (see the module docstring for the rules)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        array = np.asarray(image, dtype=np.float64)
        scale = 257.0 if mode.startswith("I;16") or array.max() > 255 else 1.0
        return Image.fromarray(np.clip(np.round(array / scale), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        array = np.nan_to_num(array) * (255.0 if np.nanmax(array) <= 1.0 else 1.0)
        return Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in {"LA", "PA", "RGBa", "La"} or mode == "RGBA":
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def open_image(data: bytes) -> Image.Image:
    """The decoded image of a file's bytes (any mode), or `Rejected` with the reason (empty, unknown, corrupt)."""
    if not data:
        raise Rejected("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except UnidentifiedImageError:
        raise Rejected("not an image PIL can identify") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
        raise Rejected(f"corrupt or truncated image: {error}") from None
    return image


def upright_rgb(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, then 8-bit RGB by `to_rgb`: the conversion every image path uses."""
    return to_rgb(ImageOps.exif_transpose(image))


def read_rgb(path: str | Path) -> Image.Image:
    """An image file as the shard writer sees it (`open_image` + `upright_rgb`), or `Rejected` with the reason.

    Commands that read image files directly (`tokenforge reconstruct`, FlexTok, TokenFlow) use this, so a
    16-bit, palette or RGBA file gives the same pixels there as through `tokenforge shards make`.
    """
    return upright_rgb(open_image(Path(path).read_bytes()))


def prepare(path: Path, *, max_side: int | None, format: str, quality: int, min_side: int) -> list[dict[str, Any]]:
    """One sample ``{"jpg"|"png": bytes, "json": facts}`` from an image file, or `Rejected` with the reason."""
    image = open_image(path.read_bytes())
    source_mode = image.mode
    image = upright_rgb(image)
    if min(image.size) < min_side:
        raise Rejected(f"too small: {image.width}x{image.height} (shorter side < min_side={min_side})")
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if format == "png":
        image.save(buffer, format="PNG", optimize=False)
    else:
        image.save(buffer, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    facts = {"width": image.width, "height": image.height, "source_mode": source_mode, "source": path.name}
    return [{format: buffer.getvalue(), "json": _json(facts)}]


def _json(facts: dict[str, Any]) -> bytes:
    import json

    return json.dumps(facts).encode()


# ----------------------------------------------------------------------------- reading


def load(sample: dict[str, Any]) -> Image.Image:
    """The RGB image of a raw sample (``jpg``/``jpeg``/``png``/``webp`` member)."""
    for ext in ("jpg", "png", "jpeg", "webp"):
        if ext in sample:
            image = Image.open(io.BytesIO(sample[ext]))
            image.load()
            return to_rgb(image)
    raise KeyError(f"sample {sample.get('__key__')!r} has no image member (members: {sorted(sample)})")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 RGB -> float32 [3,H,W] in [-1,1]."""
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return array.permute(2, 0, 1).float().div(127.5).sub(1.0)


def transform(image: Image.Image, image_size: int | None, train: bool, random_crop: bool, hflip: bool,
              rng: random.Random | WorkerRandom) -> torch.Tensor:
    """Resize shorter side to ``image_size``, crop square, maybe flip; None keeps the stored size."""
    if image_size:
        scale = image_size / min(image.size)
        size = (max(image_size, round(image.width * scale)), max(image_size, round(image.height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)
        dx, dy = image.width - image_size, image.height - image_size
        if train and random_crop:
            left, top = rng.randint(0, dx), rng.randint(0, dy)
        else:
            left, top = dx // 2, dy // 2
        image = image.crop((left, top, left + image_size, top + image_size))
    if train and hflip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(image)


class Decoder:
    """Picklable per-sample decode for the data pipeline: raw sample -> ``{"image": [3,H,W]}`` + extras."""

    def __init__(self, image_size: int | None = 256, train: bool = True, random_crop: bool = True,
                 hflip: bool = True, seed: int | EpochSeed = 0) -> None:
        self.image_size, self.train, self.random_crop, self.hflip = image_size, train, random_crop, hflip
        self.rng = WorkerRandom(seed, "decode")

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = self.transform_image(load(sample))
        if not torch.isfinite(image).all() or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"decoded image has shape {tuple(image.shape)} or non-finite values")
        return {"image": image}

    def transform_image(self, image: Image.Image) -> torch.Tensor:
        return transform(image, self.image_size, self.train, self.random_crop, self.hflip, self.rng)
