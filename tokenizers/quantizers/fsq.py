"""Finite scalar quantization (FSQ), as in FlexTok (apple/ml-flextok ``regularizers/quantize_fsq.py``).

Each of the ``len(levels)`` channels is bounded, rounded to one of ``L_i`` values and scaled into [-1, 1]:

    half_l = (L - 1) * (1 + 1e-3) / 2,  offset = 0.5 if L is even else 0
    bound(z) = tanh(z + atanh(offset / half_l)) * half_l - offset
    code = round_ste(bound(z)) / (L // 2)          (even L gives e.g. -4/4 .. 3/4)
    index = sum_i (code_i * (L_i // 2) + L_i // 2) * basis_i,  basis = cumprod([1, L_0, .., L_{n-2}])

so the FIRST channel is the least significant digit of the index. Everything runs in fp32 (autocast off).
No parameters, no loss, no dead codes. Inputs are channel-first ``[B, len(levels), *spatial]``; the
``*_last`` helpers take FlexTok's channel-last layout ``[..., len(levels)]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tokenforge.tokenizers.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    check_channel_first,
    check_indices,
    code_statistics,
)


class FSQ(Quantizer):
    """Finite scalar quantizer with per-channel ``levels`` (codebook size = prod(levels))."""

    reports_indices = True  # methods call the channel-last helpers, not forward: indices reported from there

    def __init__(self, levels: list[int] | tuple[int, ...] = (8, 8, 8, 5, 5, 5), eps: float = 1e-3) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 2, got {levels}")
        self.eps = eps
        basis = [1]
        for level in levels[:-1]:
            basis.append(basis[-1] * level)
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int64), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.int64), persistent=False)
        self._size = math.prod(levels)

    @property
    def codebook_size(self) -> int:
        return self._size

    @property
    def dim(self) -> int:
        return len(self._levels)

    @property
    def levels(self) -> list[int]:
        return self._levels.tolist()

    # ------------------------------------------------------------------ channel-last core

    def bound(self, z: Tensor) -> Tensor:
        """Squash ``z [..., dim]`` (fp32) so that rounding gives exactly ``L`` values per channel."""
        levels = self._levels.to(torch.float32)
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize_last(self, z: Tensor) -> Tensor:
        """Channel-last ``[..., dim]`` -> codes in [-1, 1] with a straight-through rounding gradient (fp32)."""
        bounded = self.bound(z.float())
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded / (self._levels // 2).to(torch.float32)

    def codes_to_indices_last(self, codes: Tensor) -> Tensor:
        """Channel-last codes ``[..., dim]`` -> int64 indices ``[...]`` (first channel least significant)."""
        half_width = (self._levels // 2).to(torch.float32)
        digits = torch.round(codes.float() * half_width + half_width).long()
        indices = (digits * self._basis).sum(dim=-1)
        self.report_indices(indices)  # codebook-health listeners, in training mode only
        return indices

    def indices_to_codes_last(self, indices: Tensor) -> Tensor:
        """int indices ``[...]`` -> channel-last codes ``[..., dim]`` in [-1, 1] (fp32)."""
        digits = (indices.long()[..., None] // self._basis) % self._levels
        half_width = (self._levels // 2).to(torch.float32)
        return (digits.float() - half_width) / half_width

    # ------------------------------------------------------------------ channel-first contract

    def encode(self, z: Tensor) -> Tensor:
        """``[B, dim, *spatial]`` -> indices ``[B, *spatial]`` (int64)."""
        check_channel_first(z, self.dim, "FSQ.encode")
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.codes_to_indices_last(self.quantize_last(z.movedim(1, -1)))

    def decode(self, indices: Tensor) -> Tensor:
        """Indices ``[B, *spatial]`` -> codes ``[B, dim, *spatial]`` (fp32)."""
        check_indices(indices, self.codebook_size, "FSQ.decode")
        return self.indices_to_codes_last(indices).movedim(-1, 1)

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_channel_first(z, self.dim, "FSQ")
        with torch.autocast(device_type=z.device.type, enabled=False):
            codes = self.quantize_last(z.movedim(1, -1))
            indices = self.codes_to_indices_last(codes.detach())
        metrics = code_statistics(indices, self.codebook_size)
        return QuantizerOutput(
            quantized=codes.movedim(-1, 1).to(z.dtype),
            indices=indices,
            loss=torch.zeros((), device=z.device),
            metrics=metrics,
        )
