"""1D convolution blocks for audio: EnCodec/SEANet-style padded convs and Vocos backbone blocks.

- `Conv1d` (EnCodec ``SConv1d``): optional weight norm, "same"-style padding split ``left = total - total//2``,
  ``right = total//2`` with ``total = k_eff - stride`` (causal: all on the left), plus EXTRA right padding so
  the last window is complete: ``frames = ceil(L / stride)``. Reflect padding zero-extends inputs shorter
  than the pad first (as EnCodec). `ConvTranspose1d` undoes it by trimming ``k - stride`` samples.
- `ConvResidualUnit1d`, `SLSTM`: the SEANet encoder's residual unit and LSTM-with-skip.
- `ConvNeXt1dBlock` (Vocos, with layer scale and optional `AdaLayerNorm`), `ResnetBlock1d` and
  `AttnBlock1d` (Vocos ``pos_net``).

Weight norm uses ``torch.nn.utils.parametrizations.weight_norm`` (keys ``conv.parametrizations.weight.
original0/1``); official checkpoints hold the legacy ``conv.conv.weight_g/weight_v``: `convert_weight_norm_keys`
renames between the two (drop the extra ``.conv`` level of EnCodec's ``NormConv1d`` with a key-map rule).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from tokenforge.config import Configurable
from tokenforge.nn.norms import AdaLayerNorm

_NEW = ("parametrizations.weight.original0", "parametrizations.weight.original1")
_OLD = ("weight_g", "weight_v")


def convert_weight_norm_keys(state: Mapping[str, Tensor], to: str = "parametrizations") -> dict[str, Tensor]:
    """Rename weight-norm keys: legacy ``X.weight_g/weight_v`` <-> ``X.parametrizations.weight.original0/1``.

    ``to="parametrizations"`` reads official checkpoints into our modules; ``to="legacy"`` writes them back.
    """
    if to not in ("parametrizations", "legacy"):
        raise ValueError(f"to must be 'parametrizations' or 'legacy', got {to!r}")
    src, dst = (_OLD, _NEW) if to == "parametrizations" else (_NEW, _OLD)
    pattern = re.compile(r"(^|\.)(" + "|".join(re.escape(s) for s in src) + r")$")
    out = {}
    for key, value in state.items():
        out[pattern.sub(lambda m: m.group(1) + dst[src.index(m.group(2))], key)] = value
    return out


def extra_padding(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding that completes the last window, so ``frames = ceil((L + total - k) / stride) + 1``."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return max(ideal_length - length, 0)


def pad1d(x: Tensor, left: int, right: int, mode: str = "reflect", value: float = 0.0) -> Tensor:
    """``F.pad`` on the last axis; reflect works on inputs shorter than the pad (zero-extend, reflect, trim)."""
    if mode != "reflect":
        return F.pad(x, (left, right), mode, value)
    length, widest = x.shape[-1], max(left, right)
    extra = widest - length + 1 if length <= widest else 0
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode)
    return padded[..., : padded.shape[-1] - extra]


def _norm(conv: nn.Module, norm: str) -> nn.Module:
    if norm == "weight_norm":
        return weight_norm(conv, dim=0)
    if norm == "none":
        return conv
    raise ValueError(f"norm must be 'weight_norm' or 'none', got {norm!r}")


class Conv1d(Configurable, nn.Module):
    """EnCodec ``SConv1d``: padded Conv1d whose output has ``ceil(L / stride)`` frames (see module docstring)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
        groups: int = 1, bias: bool = True, causal: bool = False, norm: str = "weight_norm",
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.conv = _norm(nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation,
                                    groups=groups, bias=bias), norm)
        self.causal, self.pad_mode = causal, pad_mode
        self.kernel_size, self.stride = (kernel_size - 1) * dilation + 1, stride

    def padding(self, length: int) -> tuple[int, int]:
        """(left, right) samples added to an input of ``length``."""
        total = self.kernel_size - self.stride
        extra = extra_padding(length, self.kernel_size, self.stride, total)
        if self.causal:
            return total, extra
        return total - total // 2, total // 2 + extra

    def forward(self, x: Tensor) -> Tensor:
        left, right = self.padding(x.shape[-1])
        return self.conv(pad1d(x, left, right, self.pad_mode))


class ConvTranspose1d(Configurable, nn.Module):
    """EnCodec ``SConvTranspose1d``: output ``L * stride`` (trims ``k - stride``; causal trims the right)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True,
        causal: bool = False, norm: str = "weight_norm",
    ) -> None:
        super().__init__()
        self.convtr = _norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride, bias=bias), norm)
        self.causal, self.total = causal, kernel_size - stride

    def forward(self, x: Tensor) -> Tensor:
        y = self.convtr(x)
        right = self.total if self.causal else self.total // 2
        left = self.total - right
        return y[..., left: y.shape[-1] - right]


class ConvResidualUnit1d(Configurable, nn.Module):
    """SEANet residual unit: ``shortcut(x) + conv_k1(ELU(conv_k(ELU(x))))`` with hidden width ``dim // compress``.

    Keys ``block.1``, ``block.3``, ``shortcut`` as EnCodec (whose extra ``.conv`` level a key map drops).
    """

    def __init__(
        self, dim: int, kernel_sizes: Sequence[int] = (3, 1), dilations: Sequence[int] = (1, 1), compress: int = 2,
        true_skip: bool = False, causal: bool = False, norm: str = "weight_norm", pad_mode: str = "reflect",
        elu_alpha: float = 1.0,
    ) -> None:
        super().__init__()
        hidden = dim // compress
        layers: list[nn.Module] = []
        for i, (k, d) in enumerate(zip(kernel_sizes, dilations)):
            c_in, c_out = (dim if i == 0 else hidden), (dim if i == len(kernel_sizes) - 1 else hidden)
            layers += [nn.ELU(elu_alpha), Conv1d(c_in, c_out, k, dilation=d, causal=causal, norm=norm,
                                                 pad_mode=pad_mode)]
        self.block = nn.Sequential(*layers)
        self.shortcut = nn.Identity() if true_skip else Conv1d(dim, dim, 1, causal=causal, norm=norm,
                                                               pad_mode=pad_mode)

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.block(x)


class SLSTM(Configurable, nn.Module):
    """LSTM over time on ``(B, C, T)`` with a skip connection (``y = LSTM(x) + x``); keys ``lstm.*``."""

    def __init__(self, dim: int, num_layers: int = 2, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(2, 0, 1)  # time-major, as EnCodec
        y, _ = self.lstm(x)
        return (y + x if self.skip else y).permute(1, 2, 0)


class ConvNeXt1dBlock(Configurable, nn.Module):
    """Vocos ConvNeXt block on ``(B, C, T)``: dwconv k7 -> (Ada)LayerNorm -> Linear -> GELU -> Linear -> * gamma.

    Keys ``dwconv, norm, pwconv1, pwconv2, gamma`` as Vocos. ``adanorm_num_embeddings`` switches the norm to
    `AdaLayerNorm` (WavTokenizer's bandwidth tables); ``layer_scale_init`` <= 0 disables ``gamma``.
    """

    def __init__(
        self, dim: int, intermediate_dim: int, layer_scale_init: float = 1e-6,
        adanorm_num_embeddings: int | None = None, kernel_size: int = 7, eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.adanorm = adanorm_num_embeddings is not None
        self.norm = AdaLayerNorm(adanorm_num_embeddings, dim, eps) if self.adanorm else nn.LayerNorm(dim, eps=eps)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init))) if layer_scale_init > 0 else None

    def forward(self, x: Tensor, cond_id: Tensor | None = None) -> Tensor:
        h = self.dwconv(x).transpose(1, 2)
        if self.adanorm:
            if cond_id is None:
                raise ValueError("this ConvNeXt block uses AdaLayerNorm: pass cond_id (e.g. bandwidth_id)")
            h = self.norm(h, cond_id)
        else:
            h = self.norm(h)
        h = self.pwconv2(F.gelu(self.pwconv1(h)))
        if self.gamma is not None:
            h = h * self.gamma
        return x + h.transpose(1, 2)


class ResnetBlock1d(Configurable, nn.Module):
    """Vocos ``pos_net`` ResnetBlock: GN -> swish -> conv k3 -> GN -> swish -> dropout -> conv k3, plus residual.

    Keys ``norm1, conv1, norm2, conv2`` and ``nin_shortcut`` (1x1) when the width changes.
    """

    def __init__(
        self, in_channels: int, out_channels: int | None = None, dropout: float = 0.0, num_groups: int = 32,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = nn.GroupNorm(num_groups, in_channels, eps=eps)
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(num_groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock1d(Configurable, nn.Module):
    """Vocos ``pos_net`` AttnBlock: GN, single-head attention over time with 1x1-conv q/k/v, ``proj_out``, residual."""

    def __init__(self, channels: int, num_groups: int = 32, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels, eps=eps)
        self.q = nn.Conv1d(channels, channels, 1)
        self.k = nn.Conv1d(channels, channels, 1)
        self.v = nn.Conv1d(channels, channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = (layer(h).transpose(1, 2)[:, None] for layer in (self.q, self.k, self.v))  # (B, 1, T, C)
        h = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2)
        return x + self.proj_out(h)
