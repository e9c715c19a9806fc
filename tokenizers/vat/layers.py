"""Point-cloud layers shared by VAT and its 3DShape2VecSet peer (shared/specs/vat3d.md section 4).

- `PointEmbed`: Fourier features sin/cos(xyz @ basis), basis frequencies pi * 2^k (k < hidden_dim/6) per axis,
  concatenated with the raw xyz (and, for VAT, the normals: ``extra_dim=3``) -> Linear. Feature order is
  ``[sin(24), cos(24), xyz, extra]`` as 3DShape2VecSet's ``PointEmbed``; the extra channels are our addition.
- `GEGLUFeedForward`: ``fc2(a * gelu(g))`` with ``[a, g] = fc1(x).chunk(2)`` (exact erf GELU), hidden 4*dim.
- `PreNormAttention`: LayerNorm on the queries (and a separate one on the context for cross-attention) before
  tokenforge's shared `Attention` (``qkv="q_kv"``, output bias), no residual inside (callers add it).
- `farthest_point_sample`: deterministic FPS (start at index 0, argmax of the min squared distance, first index
  on ties). 3DShape2VecSet uses torch_cluster.fps with a RANDOM start; a fixed start makes encodings repeat.
- `DiagonalGaussian`: logvar clamped to [-30, 20]; ``kl = 0.5 * mean(mu^2 + var - 1 - logvar)`` per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.nn.attention import Attention
from tokenforge.nn.norms import LayerNorm


class PointEmbed(Configurable, nn.Module):
    """``[B, N, 3 (+extra_dim)]`` points -> ``[B, N, dim]`` Fourier embeddings."""

    def __init__(self, dim: int, hidden_dim: int = 48, extra_dim: int = 0) -> None:
        super().__init__()
        if hidden_dim % 6:
            raise ValueError(f"hidden_dim must be a multiple of 6 (sin and cos per axis), got {hidden_dim}")
        per_axis = hidden_dim // 6
        freqs = torch.pow(2.0, torch.arange(per_axis)).float() * math.pi
        basis = torch.zeros(3, 3 * per_axis)
        for axis in range(3):
            basis[axis, axis * per_axis:(axis + 1) * per_axis] = freqs
        self.register_buffer("basis", basis)
        self.extra_dim = extra_dim
        self.mlp = nn.Linear(hidden_dim + 3 + extra_dim, dim)

    def forward(self, points: Tensor) -> Tensor:
        if points.dim() != 3 or points.shape[-1] != 3 + self.extra_dim:
            raise ValueError(f"PointEmbed expects [B, N, {3 + self.extra_dim}] (xyz{' + normals' if self.extra_dim else ''}),"
                             f" got {tuple(points.shape)}")
        proj = points[..., :3] @ self.basis
        return self.mlp(torch.cat([proj.sin(), proj.cos(), points], dim=-1))


class GEGLUFeedForward(nn.Module):
    """GEGLU MLP ``fc2(a * gelu(g))``, ``[a, g] = fc1(x).chunk(2, -1)``, hidden width ``mult * dim``."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * mult * 2)
        self.fc2 = nn.Linear(dim * mult, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(a * F.gelu(gate))


class PreNormFeedForward(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = LayerNorm(dim, affine=True)
        self.ff = GEGLUFeedForward(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(self.norm(x))


class PreNormAttention(nn.Module):
    """LayerNorm(x) (and LayerNorm(context)) -> attention; heads x head_dim inner width, output bias."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, cross: bool = False) -> None:
        super().__init__()
        self.norm = LayerNorm(dim, affine=True)
        self.norm_context = LayerNorm(dim, affine=True) if cross else None
        self.attn = Attention(dim, num_heads, head_dim=head_dim, qkv="q_kv", out_bias=True)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if (context is None) != (self.norm_context is None):
            raise ValueError("cross-attention needs a context; self-attention takes none")
        ctx = self.norm_context(context) if context is not None else None
        return self.attn(self.norm(x), context=ctx)


def farthest_point_sample(points: Tensor, count: int) -> Tensor:
    """``[B, N, 3]`` -> ``[B, count]`` indices; start at 0, then the point farthest from those chosen."""
    batch, n = points.shape[:2]
    if not 1 <= count <= n:
        raise ValueError(f"cannot pick {count} of {n} points by farthest point sampling")
    xyz = points[..., :3].float()
    idx = torch.zeros(batch, count, dtype=torch.long, device=points.device)
    dist = torch.full((batch, n), float("inf"), device=points.device)
    last = torch.zeros(batch, dtype=torch.long, device=points.device)
    rows = torch.arange(batch, device=points.device)
    for i in range(1, count):
        d = (xyz - xyz[rows, last][:, None]).square().sum(-1)
        dist = torch.minimum(dist, d)
        last = dist.argmax(dim=1)
        idx[:, i] = last
    return idx


class DiagonalGaussian:
    """Posterior ``N(mean, exp(logvar))`` with logvar clamped to [-30, 20] (3DShape2VecSet / LDM)."""

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, eps: Tensor | None = None) -> Tensor:
        eps = torch.randn_like(self.mean) if eps is None else eps
        return self.mean + self.std * eps

    def kl(self) -> Tensor:
        """Per-sample KL to N(0, I), averaged over tokens and channels: ``[B]``."""
        dims = list(range(1, self.mean.dim()))
        return 0.5 * torch.mean(self.mean.square() + self.var - 1.0 - self.logvar, dim=dims)
