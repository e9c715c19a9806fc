"""Multi-scale residual quantizer (VAR's ``VectorQuantizer2``, FoundationVision/VAR models/quant.py).

One codebook shared by K scales. For scale s (size ``scales[s]``), starting from the residual f_rest = f:

    z   = area-downsample(f_rest, scale s)            (skipped when the scale equals the full size)
    idx = argmin |z|^2 + |e|^2 - 2 z.e                (``using_znorm``: argmax of the cosine instead)
    h   = Phi_s(upsample(e[idx], full size))          (upsample skipped when the scale is the full size)
    f_hat += h ;  f_rest -= h

with Phi(h) = (1 - r) h + r conv3(h), r = ``quant_resi`` (identity when |r| <= 1e-6). ``share_quant_resi``
picks the Phi layout: 1 = one shared conv, 0 = one per scale (``default_qresi_counts`` or K of them),
n > 1 = n partially shared convs; scale s uses conv argmin_k |ticks_k - s/(K-1)| with
ticks = linspace(1/(3n), 1-1/(3n), n) when n == 4, else linspace(1/(2n), 1-1/(2n), n).
Training loss = (1/K) sum_s [beta * MSE(sg(f_hat_s), f) + MSE(f_hat_s, sg(f))]; output = straight-through f_hat.

Two layouts, chosen by ``spatial_dims``:
- 2 (VAR): ``[B,C,H,W]``, a scale is a side length ``pn`` (grid pn x pn) or an ``[h, w]`` pair; bicubic up,
  Phi = Conv2d 3x3.
- 1 (sequences, e.g. VAT's 1D latent set): ``[B,C,L]``, a scale is a length; area (adaptive average) down,
  **linear** up (align_corners False) because bicubic has no 1D form, Phi = Conv1d k=3. This is our adaptation,
  not an official VAR setting.

Parameter and buffer names equal VAR's ``quantize.*`` keys: ``embedding.weight``,
``quant_resi.qresi_ls.{i}.weight/bias`` (or ``quant_resi.qresi.*`` / ``quant_resi.{i}.*``), ``ema_vocab_hit_SV``.
Deviations: the usage buffer ``ema_vocab_hit_SV`` is updated in every training forward (VAR only when
torch.distributed is initialised); with a single scale Phi is chosen at s/(K-1) := 0 (VAR divides by zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.tokenizers.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    check_channel_first,
    check_indices,
    code_statistics,
    from_rows,
    to_rows,
)
from tokenforge.tokenizers.quantizers.distributed import all_reduce_sum, world_size


def scale_down(x: Tensor, size: Sequence[int]) -> Tensor:
    """Residual -> one scale: area (adaptive average) down-sampling of ``[B,C,*spatial]`` to ``size``."""
    return F.interpolate(x, size=tuple(size), mode="area")


def scale_up(x: Tensor, size: Sequence[int]) -> Tensor:
    """One scale's code map -> full size: bicubic for 2D grids, linear for 1D sequences (align_corners False)."""
    mode = "bicubic" if x.ndim == 4 else "linear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


class Phi(nn.Module):
    """h -> (1 - ratio) * h + ratio * conv(h), a 3-tap (1D) or 3x3 (2D) same-size convolution."""

    def __init__(self, dim: int, ratio: float, spatial_dims: int) -> None:
        super().__init__()
        self.ratio, self.spatial_dims = abs(ratio), spatial_dims
        self.weight = nn.Parameter(torch.empty(dim, dim, *([3] * spatial_dims)))
        self.bias = nn.Parameter(torch.empty(dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # torch's Conv default
        bound = 1.0 / math.sqrt(dim * 3**spatial_dims)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, h: Tensor) -> Tensor:
        conv = F.conv2d if self.spatial_dims == 2 else F.conv1d
        return h.mul(1 - self.ratio) + conv(h, self.weight, self.bias, padding=1).mul_(self.ratio)


class PhiSet(nn.Module):
    """The Phi convs of all scales, laid out as VAR's PhiShared / PhiNonShared / PhiPartiallyShared."""

    def __init__(self, dim: int, ratio: float, share: int, num_scales: int, default_counts: int, spatial_dims: int):
        super().__init__()

        def make() -> nn.Module:
            return Phi(dim, ratio, spatial_dims) if abs(ratio) > 1e-6 else nn.Identity()

        self.share = share
        if share == 1:
            self.qresi = make()
            count = 1
        elif share == 0:
            count = default_counts or num_scales
            for i in range(count):
                self.add_module(str(i), make())
        else:
            count = share
            self.qresi_ls = nn.ModuleList(make() for _ in range(share))
        k = count
        self.ticks = np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k) if k == 4 else np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)

    def for_scale(self, si: int, num_scales: int) -> nn.Module:
        if self.share == 1:
            return self.qresi
        at = si / (num_scales - 1) if num_scales > 1 else 0.0
        k = int(np.argmin(np.abs(self.ticks - at)).item())
        return self.get_submodule(str(k)) if self.share == 0 else self.qresi_ls[k]


class MultiScaleResidualQuantizer(Quantizer):
    """VAR-style next-scale residual VQ over ``[B,C,H,W]`` (``spatial_dims=2``) or ``[B,C,L]`` (``=1``).

    Defaults are the released VAR VQVAE's quantizer (V=4096, C=32, 10 scales up to 16x16).
    """

    def __init__(
        self,
        codebook_size: int = 4096,
        dim: int = 32,
        scales: Sequence[int | Sequence[int]] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
        spatial_dims: int = 2,
        beta: float = 0.25,
        using_znorm: bool = False,
        quant_resi: float = 0.5,
        share_quant_resi: int = 4,
        default_qresi_counts: int = 0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2):
            raise ValueError(f"spatial_dims must be 1 (sequences [B,C,L]) or 2 (grids [B,C,H,W]), got {spatial_dims}")
        if not scales:
            raise ValueError("scales must list at least one scale size")
        self.spatial_dims, self.beta, self.using_znorm = spatial_dims, beta, using_znorm
        self.scale_sizes = [self._as_size(s) for s in scales]
        self.embedding = nn.Embedding(codebook_size, dim)
        self.quant_resi = PhiSet(dim, quant_resi, share_quant_resi, len(scales), default_qresi_counts, spatial_dims)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(scales), codebook_size))
        self.record_hit = 0

    def _as_size(self, scale: int | Sequence[int]) -> tuple[int, ...]:
        size = (int(scale),) * self.spatial_dims if isinstance(scale, (int, np.integer)) else tuple(map(int, scale))
        if len(size) != self.spatial_dims or min(size) < 1:
            raise ValueError(f"scale {scale!r} is not a positive size for {self.spatial_dims}D maps")
        return size

    # ------------------------------------------------------------------ contract

    @property
    def codebook_size(self) -> int:
        return self.embedding.num_embeddings

    @property
    def dim(self) -> int:
        return self.embedding.embedding_dim

    @property
    def num_scales(self) -> int:
        return len(self.scale_sizes)

    @property
    def tokens_per_scale(self) -> list[int]:
        return [math.prod(size) for size in self.scale_sizes]

    def encode(self, f: Tensor) -> list[Tensor]:
        """Features -> per-scale indices ``[B, n_s]`` (row-major within a scale), coarse to fine."""
        return self._residual_loop(f)[0]

    def encode_fhat(self, f: Tensor) -> list[Tensor]:
        """Features -> cumulative reconstruction after every scale (VAR ``f_to_idxBl_or_fhat(to_fhat=True)``)."""
        return self._residual_loop(f)[1]

    def decode(self, indices: list[Tensor]) -> Tensor:
        """Per-scale indices -> final cumulative f_hat ``[B, C, *last scale]``."""
        return self.indices_to_fhat(indices)[-1]

    # ------------------------------------------------------------------ helpers

    def _down(self, x: Tensor, size: tuple[int, ...]) -> Tensor:
        return scale_down(x, size)

    def _up(self, x: Tensor, size: tuple[int, ...]) -> Tensor:
        return scale_up(x, size)

    def _check_input(self, f: Tensor, who: str) -> tuple[int, ...]:
        check_channel_first(f, self.dim, who, self.spatial_dims)
        full = tuple(f.shape[2:])
        for size in self.scale_sizes:
            if any(s > n for s, n in zip(size, full)):
                raise ValueError(f"{who}: scale {size} is larger than the input's spatial size {full}")
        return full

    @torch.no_grad()
    def _nearest(self, rows: Tensor) -> Tensor:
        weight = self.embedding.weight.detach()
        if self.using_znorm:
            return torch.argmax(F.normalize(rows, dim=-1) @ F.normalize(weight.t(), dim=0), dim=1)
        dist_sq = rows.square().sum(dim=1, keepdim=True) + weight.square().sum(dim=1)
        return torch.addmm(dist_sq, rows, weight.t(), beta=1, alpha=-2).argmin(dim=1)

    def embed_scale(self, idx: Tensor, si: int) -> Tensor:
        """Indices ``[B, n_s]`` (or ``[B, *size]``) of scale ``si`` -> code map ``[B, C, *size_s]``."""
        size = self.scale_sizes[si]
        return from_rows(self.embedding(idx.reshape(idx.shape[0], -1)).reshape(-1, self.dim), idx.shape[0], size)

    def _scale_step(self, h: Tensor, si: int, full: tuple[int, ...]) -> Tensor:
        """Code map at scale si -> its full-size contribution Phi_si(upsample(h))."""
        if tuple(h.shape[2:]) != full:
            h = self._up(h, full)
        return self.quant_resi.for_scale(si, self.num_scales)(h)

    def _residual_loop(self, f: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        full = self._check_input(f, "MultiScaleResidualQuantizer.encode")
        with torch.no_grad(), torch.autocast(device_type=f.device.type, enabled=False):
            f_rest = f.detach().float().clone()
            f_hat = torch.zeros_like(f_rest)
            indices, fhats = [], []
            for si, size in enumerate(self.scale_sizes):
                z = f_rest if size == full else self._down(f_rest, size)
                idx = self._nearest(to_rows(z))
                h = self._scale_step(self.embed_scale(idx.view(f.shape[0], -1), si), si, full)
                f_hat = f_hat + h
                f_rest = f_rest - h
                indices.append(idx.view(f.shape[0], -1))
                fhats.append(f_hat.clone())
        return indices, fhats

    # ------------------------------------------------------------------ training pass

    def forward(self, f: Tensor) -> QuantizerOutput:
        full = self._check_input(f, "MultiScaleResidualQuantizer")
        in_dtype, batch = f.dtype, f.shape[0]
        with torch.autocast(device_type=f.device.type, enabled=False):
            f = f.float()
            f_no_grad = f.detach()
            f_rest = f_no_grad.clone()
            f_hat = torch.zeros_like(f_rest)
            loss: Tensor | float = 0.0
            indices, hits = [], []
            for si, size in enumerate(self.scale_sizes):
                z = f_rest if size == full else self._down(f_rest, size)
                idx = self._nearest(to_rows(z))
                hit = torch.bincount(idx, minlength=self.codebook_size).float()
                if self.training:  # usage over all ranks (VAR's all-reduce)
                    all_reduce_sum(hit)
                h = self._scale_step(self.embed_scale(idx.view(batch, -1), si), si, full)
                f_hat = f_hat + h
                f_rest = f_rest - h.detach()
                loss = loss + F.mse_loss(f_hat.detach(), f).mul_(self.beta) + F.mse_loss(f_hat, f_no_grad)
                indices.append(idx.view(batch, -1))
                hits.append(hit)
            loss = loss * (1.0 / self.num_scales)
            quantized = (f_hat.detach() - f_no_grad).add_(f)  # straight-through: value f_hat, gradient of f
        if self.training:
            self._record_usage(hits)
        metrics = code_statistics(torch.cat([i.reshape(-1) for i in indices]), self.codebook_size)
        margin = world_size() * (f.numel() / f.shape[1]) / self.codebook_size * 0.08
        metrics["usage_ema"] = (self.ema_vocab_hit_SV >= margin).float().mean()
        return QuantizerOutput(quantized.to(in_dtype), indices, loss.reshape(()), metrics)

    @torch.no_grad()
    def _record_usage(self, hits: list[Tensor]) -> None:
        for si, hit in enumerate(hits):
            if self.record_hit == 0:
                self.ema_vocab_hit_SV[si].copy_(hit)
            elif self.record_hit < 100:
                self.ema_vocab_hit_SV[si].mul_(0.9).add_(hit.mul(0.1))
            else:
                self.ema_vocab_hit_SV[si].mul_(0.99).add_(hit.mul(0.01))
        self.record_hit += 1

    # ------------------------------------------------------------------ decoding and teacher forcing

    def _check_indices(self, indices: Sequence[Tensor], who: str, allow_prefix: bool = False) -> int:
        if isinstance(indices, Tensor) or not isinstance(indices, (list, tuple)):
            raise TypeError(f"{who} expects a list of per-scale index tensors [B, n_s], got {type(indices).__name__}")
        if len(indices) > self.num_scales or (not allow_prefix and len(indices) != self.num_scales):
            raise ValueError(f"{who}: got {len(indices)} scales, the quantizer has {self.num_scales}")
        for si, idx in enumerate(indices):
            check_indices(idx, self.codebook_size, who)
            if idx[0].numel() != self.tokens_per_scale[si]:
                raise ValueError(
                    f"{who}: scale {si} has {idx[0].numel()} tokens per sample, expected {self.tokens_per_scale[si]}"
                )
        return indices[0].shape[0]

    def indices_to_fhat(self, indices: Sequence[Tensor], all_scales: bool = True) -> list[Tensor]:
        """Per-scale indices (all K, or a coarse prefix) -> cumulative f_hat at the last scale's size.

        Returns every scale's cumulative f_hat (``all_scales``) or a one-element list with the final one.
        """
        self._check_indices(indices, "MultiScaleResidualQuantizer.indices_to_fhat", allow_prefix=True)
        full = self.scale_sizes[-1]
        f_hat = torch.zeros(indices[0].shape[0], self.dim, *full, device=self.embedding.weight.device)
        out = []
        for si, idx in enumerate(indices):
            f_hat = f_hat + self._scale_step(self.embed_scale(idx, si), si, full)
            if all_scales:
                out.append(f_hat.clone())
        return out if all_scales else [f_hat]

    def idx_to_var_input(self, indices: Sequence[Tensor]) -> Tensor:
        """Teacher-forcing input ``[B, n_1 + ... + n_{K-1}, C]``: after scale s < K-1, the cumulative f_hat
        area-downsampled to scale s+1, flattened row-major (VAR ``idxBl_to_var_input``)."""
        batch = self._check_indices(indices, "MultiScaleResidualQuantizer.idx_to_var_input")
        full = self.scale_sizes[-1]
        f_hat = torch.zeros(batch, self.dim, *full, device=self.embedding.weight.device)
        pieces = []
        for si in range(self.num_scales - 1):
            f_hat = f_hat + self._scale_step(self.embed_scale(indices[si], si), si, full)
            nxt = self._down(f_hat, self.scale_sizes[si + 1])
            pieces.append(nxt.reshape(batch, self.dim, -1).transpose(1, 2))
        if not pieces:
            return f_hat.new_zeros(batch, 0, self.dim)
        return torch.cat(pieces, dim=1)

    def next_autoregressive_input(self, si: int, f_hat: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Sampling step (VAR ``get_next_autoregressive_input``): add scale ``si``'s code map ``h`` ``[B,C,*size_s]``
        to ``f_hat`` (full size) and return ``(f_hat, next_input)``, next_input = f_hat at scale si+1 (or f_hat
        itself after the last scale)."""
        full = self.scale_sizes[-1]
        f_hat = f_hat + self._scale_step(h, si, full)
        if si == self.num_scales - 1:
            return f_hat, f_hat
        return f_hat, self._down(f_hat, self.scale_sizes[si + 1])
