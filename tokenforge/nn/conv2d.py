"""The 2-D convolutional blocks of taming-transformers' VQGAN, as reused by LlamaGen, VAR and TokenFlow.

Parameter names follow those codebases (``norm1/conv1/norm2/conv2/nin_shortcut``, ``norm/q/k/v/proj_out``,
``conv``) so official checkpoints load by renaming prefixes only. Numerics match them too: GroupNorm(32,
eps 1e-6), swish = x*sigmoid(x), Downsample pads (0,1,0,1) with zeros before a 3x3 stride-2 conv,
Upsample is nearest x2 then a 3x3 conv. AttnBlock is single-head attention over all H*W positions with
scale C^-0.5; it runs through ``scaled_dot_product_attention`` instead of two ``bmm`` calls (same maths,
float32 results agree to ~1e-6). VAR stores q/k/v as one fused ``qkv`` conv; its loader splits it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def normalize(channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm(32, eps 1e-6, affine): the normalisation of every taming block."""
    if channels % num_groups:
        raise ValueError(f"GroupNorm needs channels divisible by {num_groups}; got {channels} (use ch a multiple of 32)")
    return nn.GroupNorm(num_groups, channels, eps=1e-6, affine=True)


def swish(x: Tensor) -> Tensor:
    """x * sigmoid(x) (SiLU)."""
    return F.silu(x)


class ResnetBlock(nn.Module):
    """norm1 -> swish -> conv1 -> norm2 -> swish -> dropout -> conv2, plus a 1x1 ``nin_shortcut`` when widths differ.

    ``conv_bias=False, shortcut_on_h=True`` is MAGE's JAX-converted MaskGIT VQGAN (used by ENAT): bias-free
    convs, and when widths differ the output is ``nin_shortcut(h) + h`` with an out->out bias-free 1x1 conv
    (the input ``x`` is then dropped, a quirk of that conversion kept for weight compatibility).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, dropout: float = 0.0,
                 conv_bias: bool = True, shortcut_on_h: bool = False) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.shortcut_on_h = shortcut_on_h
        self.norm1 = normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=conv_bias)
        self.norm2 = normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=conv_bias)
        if in_channels != out_channels:
            width = out_channels if shortcut_on_h else in_channels
            self.nin_shortcut = nn.Conv2d(width, out_channels, 1, 1, 0, bias=conv_bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(h if self.shortcut_on_h else x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W grid with 1x1 q/k/v/proj_out convs and a residual add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (conv(y).reshape(b, 1, c, h * w).transpose(-1, -2) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(c), as in taming
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve H and W: zero-pad right/bottom by one, then a 3x3 stride-2 conv without padding;
    ``with_conv=False`` is a parameter-free 2x2 average pool (MAGE / MaskGIT VQGAN encoder)."""

    def __init__(self, channels: int, with_conv: bool = True) -> None:
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        if not self.with_conv:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def split_fused_qkv(state: dict[str, Tensor], suffix: str = ".qkv.") -> dict[str, Tensor]:
    """Turn fused ``*.qkv.{weight,bias}`` (VAR's AttnBlock; q, k, v stacked on dim 0) into ``*.q/.k/.v``."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if suffix not in key:
            out[key] = value
            continue
        if value.shape[0] % 3:
            raise ValueError(f"{key}: fused qkv first dimension {value.shape[0]} is not divisible by 3")
        head, tail = key.split(suffix, 1)
        for name, part in zip("qkv", torch.chunk(value, 3, dim=0)):
            out[f"{head}.{name}.{tail}"] = part.contiguous()
    return out
