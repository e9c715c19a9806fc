"""How each FID protocol turns 8-bit images into the Inception network's 299x299 input.

The published FID codes agree on the network and differ here, and that difference moves FID by whole points at
low resolution: the resize filter (bilinear without antialiasing, TensorFlow 1's bilinear, bilinear with
antialiasing, PIL bicubic) and the value map to [-1, 1] (``2 x / 255 - 1`` or ``(x - 128) / 128``).
Every function takes ``[B, 3, H, W]`` float images holding 8-bit values 0..255 and returns the network input.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tokenforge.metrics.inception import SIZE


def _tf1_axis(size_in: int, size_out: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices and weights of TF1 ``resize_bilinear`` (align_corners=False, no half-pixel centres):
    output i reads ``i * in / out``, between floor and floor + 1 (clamped to the last pixel)."""
    position = torch.arange(size_out, dtype=torch.float32, device=device) * torch.tensor(size_in / size_out)
    low = position.floor().long()
    return low, (low + 1).clamp(max=size_in - 1), position - low.float()


def resize_tf1_bilinear(x: Tensor, size: int = SIZE) -> Tensor:
    """TensorFlow 1.x bilinear resize (what the original FID graph and the ADM evaluator run in-graph)."""
    ylo, yhi, dy = _tf1_axis(x.shape[-2], size, x.device)
    xlo, xhi, dx = _tf1_axis(x.shape[-1], size, x.device)
    top, bottom = x.index_select(2, ylo), x.index_select(2, yhi)
    top = top.index_select(3, xlo) + (top.index_select(3, xhi) - top.index_select(3, xlo)) * dx
    bottom = bottom.index_select(3, xlo) + (bottom.index_select(3, xhi) - bottom.index_select(3, xlo)) * dx
    return top + (bottom - top) * dy.view(-1, 1)


def resize_pil_bicubic(x: Tensor, size: int = SIZE) -> Tensor:
    """clean-fid's resize: PIL bicubic on each channel as a float image (no 8-bit rounding), clipped to 0..255."""
    from PIL import Image

    out = np.empty((x.shape[0], 3, size, size), dtype=np.float32)
    array = x.detach().cpu().numpy().astype(np.float32)
    for b in range(array.shape[0]):
        for c in range(3):
            image = Image.fromarray(array[b, c], mode="F").resize((size, size), resample=Image.BICUBIC)
            out[b, c] = np.asarray(image).clip(0, 255)
    return torch.from_numpy(out).to(x.device)


def pytorch_fid_input(x: Tensor) -> Tensor:
    """pytorch-fid: ``x / 255`` (its ToTensor), bilinear resize without antialiasing, then ``2 x - 1``."""
    x = F.interpolate(x / 255, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return 2 * x - 1


def tf1_input(x: Tensor) -> Tensor:
    """torch-fidelity, torchmetrics with ``antialias=False`` and the ADM evaluator: TF1 bilinear, (x-128)/128."""
    return (resize_tf1_bilinear(x) - 128) / 128


def antialias_input(x: Tensor) -> Tensor:
    """torchmetrics' default (``antialias=True``): antialiased bilinear resize, then ``(x - 128) / 128``."""
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    return (x - 128) / 128


def clean_fid_input(x: Tensor) -> Tensor:
    """clean-fid (mode ``clean``): PIL bicubic on float channels, then ``(x - 128) / 128``."""
    return (resize_pil_bicubic(x) - 128) / 128


INPUTS: dict[str, Callable[[Tensor], Tensor]] = {
    "bilinear, x/255*2-1": pytorch_fid_input,
    "tf1-bilinear, (x-128)/128": tf1_input,
    "antialiased bilinear, (x-128)/128": antialias_input,
    "pil-bicubic float, (x-128)/128": clean_fid_input,
}
