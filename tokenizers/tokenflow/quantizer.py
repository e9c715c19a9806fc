"""TokenFlow's dual-codebook, shared-index, multi-scale residual quantizer (official ``VectorQuantizer``).

The input ``h`` ``[B, S+P, g, g]`` is a semantic map (S = 32 channels) stacked on a pixel map (P = 8). Two
codebooks of the same length K (``semantic_embedding`` [K, S], ``pixel_embedding`` [K, P]) share one index:

    residual = h ; quant = 0
    for s in scales:                               (VAR's loop: area down, bicubic up, `scale_down`/`scale_up`)
        r   = area_down(residual, s)
        z   = [l2norm(r_sem), l2norm(r_pix)]       (each half normalised; rows of both codebooks too)
        idx = argmin_k |z_sem - e_sem_k|^2 + pixel_weight * |z_pix - e_pix_k|^2
        z_q = [e_sem[idx], e_pix[idx]] ; st = z + sg(z_q - z)
        u   = bicubic_up(st, g) ; quant += u ; residual -= sg(u)

Per-scale losses (averaged over the scales used): ``vq = mean((z_q - sg z)^2)``, ``commit = beta * mean((sg z_q -
z)^2)``, optional entropy ``entropy_loss_ratio * (sample entropy - batch entropy)`` of softmax(-d / 0.01).
In training, with probability ``scale_dropout`` one random scale other than the first is skipped (the
upsampling target stays g), and the last ``usage_window`` indices are kept in ``codebook_used`` for the usage
statistic. ``scales=[g]`` is the single-scale option. Stored codebook rows stay raw and are normalised at use.

Deviations: ``codebook_used`` starts at -1 (official: 0, which counts code 0 as used before any step); the
entropy term uses the same formula but is computed on the per-scale distance matrix.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

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
from tokenforge.tokenizers.quantizers.residual import scale_down, scale_up


def _distances(z: Tensor, e: Tensor) -> Tensor:
    """Squared L2 distances ``[N, K]`` written as |z|^2 + |e|^2 - 2 z.e (as the official code)."""
    return z.square().sum(1, keepdim=True) + e.square().sum(1)[None] - 2 * (z @ e.t())


def entropy_loss(affinity: Tensor, temperature: float = 0.01) -> Tensor:
    """Sample entropy minus batch-mean entropy of softmax(affinity / T) (LlamaGen/TokenFlow's entropy term)."""
    logits = affinity.reshape(-1, affinity.shape[-1]) / temperature
    probs = F.softmax(logits, dim=-1)
    log_probs = F.log_softmax(logits + 1e-5, dim=-1)
    avg = probs.mean(0)
    return -(probs * log_probs).sum(-1).mean() + (avg * torch.log(avg + 1e-5)).sum()


class DualCodebookQuantizer(Quantizer):
    """Shared-index semantic + pixel codebooks over VAR-style scales; see the module docstring."""

    token_layout = "scales"

    def __init__(
        self,
        codebook_size: int = 32768,
        semantic_dim: int = 32,
        pixel_dim: int = 8,
        scales: Sequence[int] = (1, 2, 4, 6, 8, 10, 12, 14),
        pixel_weight: float = 1.0,
        beta: float = 0.25,
        entropy_loss_ratio: float = 0.0,
        scale_dropout: float = 0.1,
        usage_window: int = 131072,
    ) -> None:
        super().__init__()
        scales = [int(s) for s in scales]
        if not scales or min(scales) < 1 or scales != sorted(scales):
            raise ValueError(f"scales must be increasing positive grid sides, got {scales}")
        self.semantic_dim, self.pixel_dim, self.scales = semantic_dim, pixel_dim, scales
        self.pixel_weight, self.beta, self.entropy_loss_ratio = pixel_weight, beta, entropy_loss_ratio
        self.scale_dropout = scale_dropout
        self.semantic_embedding = nn.Embedding(codebook_size, semantic_dim)
        self.pixel_embedding = nn.Embedding(codebook_size, pixel_dim)
        for table in (self.semantic_embedding, self.pixel_embedding):
            nn.init.uniform_(table.weight, -1.0 / codebook_size, 1.0 / codebook_size)
            table.weight.data = F.normalize(table.weight.data, dim=-1)
        self.register_buffer("codebook_used", torch.full((usage_window,), -1.0))

    # ------------------------------------------------------------------ contract

    @property
    def codebook_size(self) -> int:
        return self.semantic_embedding.num_embeddings

    @property
    def dim(self) -> int:
        return self.semantic_dim + self.pixel_dim

    @property
    def grid(self) -> int:
        return self.scales[-1]

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    @property
    def tokens_per_scale(self) -> list[int]:
        return [s * s for s in self.scales]

    def codebook(self) -> Tensor:
        """The 40-d code vectors ``[K, S+P]``: each part's rows L2-normalised, then concatenated."""
        return torch.cat([F.normalize(self.semantic_embedding.weight, dim=-1),
                          F.normalize(self.pixel_embedding.weight, dim=-1)], dim=-1)

    # ------------------------------------------------------------------ one scale

    def _quantize(self, r: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Scale map ``[B, C, s, s]`` -> (normalised z, z_q, indices ``[B, s*s]``, distances ``[N, K]``)."""
        batch, size = r.shape[0], tuple(r.shape[2:])
        rows = to_rows(r)
        z_sem = F.normalize(rows[:, : self.semantic_dim], dim=-1)
        z_pix = F.normalize(rows[:, self.semantic_dim:], dim=-1)
        e_sem = F.normalize(self.semantic_embedding.weight, dim=-1)
        e_pix = F.normalize(self.pixel_embedding.weight, dim=-1)
        d = _distances(z_sem, e_sem.detach()) + self.pixel_weight * _distances(z_pix, e_pix.detach())
        idx = d.argmin(dim=1)
        z_q = torch.cat([e_sem[idx], e_pix[idx]], dim=-1)
        z = torch.cat([z_sem, z_pix], dim=-1)
        return from_rows(z, batch, size), from_rows(z_q, batch, size), idx.view(batch, -1), d

    def _check(self, h: Tensor, who: str) -> None:
        check_channel_first(h, self.dim, who, spatial_dims=2)
        if tuple(h.shape[2:]) != (self.grid, self.grid):
            raise ValueError(f"{who}: the feature map is {tuple(h.shape[2:])} but the last scale is "
                             f"{self.grid}x{self.grid}; scales must end at the encoder's grid")

    def _active_scales(self) -> list[int]:
        scales = list(range(self.num_scales))
        if self.training and self.num_scales > 1 and self.scale_dropout > 0 and random.random() < self.scale_dropout:
            scales.pop(random.randrange(1, self.num_scales))
        return scales

    # ------------------------------------------------------------------ passes

    def forward(self, h: Tensor) -> QuantizerOutput:
        """Training pass: straight-through ``quant`` (same shape as h), per-scale indices, loss and metrics."""
        self._check(h, "DualCodebookQuantizer")
        in_dtype, g = h.dtype, (self.grid, self.grid)
        with torch.autocast(device_type=h.device.type, enabled=False):
            residual, quant = h.float(), torch.zeros_like(h, dtype=torch.float32)
            vq = commit = entropy = residual.new_zeros(())
            indices, used = [], self._active_scales()
            for si in used:
                z, z_q, idx, d = self._quantize(scale_down(residual, (self.scales[si],) * 2))
                vq = vq + F.mse_loss(z_q, z.detach())
                commit = commit + self.beta * F.mse_loss(z_q.detach(), z)
                if self.entropy_loss_ratio:
                    entropy = entropy + self.entropy_loss_ratio * entropy_loss(-d)
                up = scale_up(z + (z_q - z).detach(), g)
                quant = quant + up
                residual = residual - up.detach()
                indices.append(idx)
            n = float(len(used))
            loss = (vq + commit + entropy) / n
        flat = torch.cat([i.reshape(-1) for i in indices])
        if self.training:
            self._record_usage(flat)
        metrics = code_statistics(flat, self.codebook_size)
        metrics.update(vq_loss=(vq / n).detach(), commit_loss=(commit / n).detach(),
                       codebook_usage=self.usage(), scales_used=torch.tensor(n))
        return QuantizerOutput(quant.to(in_dtype), indices, loss, metrics)

    @torch.no_grad()
    def encode(self, h: Tensor) -> list[Tensor]:
        """Features -> per-scale indices ``[B, s*s]`` (row-major), coarse to fine; never drops a scale."""
        return self.quantize_all(h)[1]

    @torch.no_grad()
    def quantize_all(self, h: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Eval pass over every scale: (``quant`` ``[B, C, g, g]``, per-scale indices). No state changes."""
        self._check(h, "DualCodebookQuantizer.encode")
        g = (self.grid, self.grid)
        with torch.autocast(device_type=h.device.type, enabled=False):
            residual, quant = h.float(), torch.zeros_like(h, dtype=torch.float32)
            indices = []
            for s in self.scales:
                z, z_q, idx, _ = self._quantize(scale_down(residual, (s, s)))
                up = scale_up(z + (z_q - z), g)
                quant, residual = quant + up, residual - up
                indices.append(idx)
        return quant.to(h.dtype), indices

    def split_indices(self, indices: Tensor | Sequence[Tensor], who: str = "decode") -> list[Tensor]:
        """Concatenated ``[B, L]`` or per-scale indices -> per-scale list; L must end on a scale boundary."""
        if isinstance(indices, Tensor):
            if indices.ndim != 2:
                raise ValueError(f"{who}: concatenated indices must be [B, L], got {tuple(indices.shape)}")
            bounds = [0] + list(torch.tensor(self.tokens_per_scale).cumsum(0).tolist())
            if indices.shape[1] not in bounds[1:]:
                raise ValueError(f"{who}: {indices.shape[1]} tokens do not end on a scale boundary; "
                                 f"valid lengths are {bounds[1:]}")
            count = bounds.index(indices.shape[1])
            indices = [indices[:, bounds[i]:bounds[i + 1]] for i in range(count)]
        indices = list(indices)
        if not indices or len(indices) > self.num_scales:
            raise ValueError(f"{who}: got {len(indices)} scales, the quantizer has {self.num_scales}")
        for si, idx in enumerate(indices):
            check_indices(idx, self.codebook_size, who)
            if idx[0].numel() != self.tokens_per_scale[si]:
                raise ValueError(f"{who}: scale {si} has {idx[0].numel()} tokens, expected {self.tokens_per_scale[si]}")
        return [idx.reshape(idx.shape[0], -1) for idx in indices]

    def embed_scale(self, idx: Tensor, si: int) -> Tensor:
        """Indices ``[B, s*s]`` of scale ``si`` -> normalised code map ``[B, C, s, s]``."""
        s = self.scales[si]
        return from_rows(F.embedding(idx.reshape(-1), self.codebook()), idx.shape[0], (s, s))

    def decode(self, indices: Tensor | Sequence[Tensor]) -> Tensor:
        """Indices (all scales or a coarse prefix) -> ``quant`` ``[B, C, g, g]``: sum of upsampled code maps."""
        indices = self.split_indices(indices)
        g = (self.grid, self.grid)
        quant = None
        for si, idx in enumerate(indices):
            up = scale_up(self.embed_scale(idx, si), g)
            quant = up if quant is None else quant + up
        return quant

    def next_scale_inputs(self, indices: Tensor | Sequence[Tensor]) -> Tensor:
        """Teacher-forcing inputs of the next-scale generator ``[B, L - s_K^2, C]`` (t2i ``VQTower.forward``).

        The running sum lives at the current scale: f = code map of scale 1; for every following scale,
        f = bicubic(f, next scale) is emitted (flattened row-major) and that scale's code map is added. This is
        NOT the g x g sum of `decode` resized down (bicubic 2->4->6 differs from 2->6; checked on the fixture).
        """
        indices = self.split_indices(indices, "next_scale_inputs")
        if len(indices) != self.num_scales:
            raise ValueError(f"next_scale_inputs needs all {self.num_scales} scales, got {len(indices)}")
        f, pieces = None, []
        for si in range(self.num_scales - 1):
            h = self.embed_scale(indices[si], si)
            f = h if f is None else f + h
            f = scale_up(f, (self.scales[si + 1],) * 2)
            pieces.append(f.flatten(2).transpose(1, 2))
        if not pieces:
            return self.codebook().new_zeros(indices[0].shape[0], 0, self.dim)
        return torch.cat(pieces, dim=1)

    # ------------------------------------------------------------------ usage

    @torch.no_grad()
    def _record_usage(self, flat: Tensor) -> None:
        window = self.codebook_used.numel()
        flat = flat[-window:].to(self.codebook_used.dtype)
        n = flat.numel()
        if n < window:
            self.codebook_used[: window - n] = self.codebook_used[n:].clone()
        self.codebook_used[window - n:] = flat

    def usage(self) -> Tensor:
        """Fraction of the codebook among the last ``usage_window`` training indices."""
        seen = self.codebook_used[self.codebook_used >= 0]
        return torch.tensor(float(seen.unique().numel()) / self.codebook_size) if seen.numel() else torch.tensor(0.0)


__all__ = ["DualCodebookQuantizer", "entropy_loss"]
