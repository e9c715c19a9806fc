"""LinFusion's generalized linear attention: a drop-in for a diffusers UNet's self-attention (``attn1``).

x (B, N, d) -> q = W_q(x + MLP_q(x)), k = W_k(x + MLP_k(x)), v = W_v x; per head, with phi = elu + 1,
out_n = phi(q_n) . [(1/N) sum_m phi(k_m) v_m^T] / (phi(q_n) . mean_m phi(k_m) + 1e-4); then to_out.

Parameter names match the official ``GeneralizedLinearAttention`` (``to_q/to_k/to_v``, ``to_out.0``,
``to_q_/to_k_`` = Linear, LayerNorm, LeakyReLU, Linear) so released state dicts load without renaming.
Deliberate differences from the official module (numerically equivalent in fp32):
- plain ``nn.Module`` rather than a diffusers ``Attention`` subclass: the host block only calls it;
- the LeakyReLU is not in-place (hooks on the LayerNorm output stay valid);
- ``chunk_size`` processes tokens in chunks (two passes: state, then outputs), so intermediate activations
  of the MLPs stay bounded for huge token counts; the kv state is then accumulated in fp32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.config import Configurable

EPS = 1e-4


def _residual_mlp(dim: int, mid: int | None) -> nn.Module:
    if mid == -1:  # official semantics: Identity, so the residual input becomes x + x
        return nn.Identity()
    mid = dim if mid is None else mid
    if mid <= 0:
        raise ValueError(f"projection_mid_dim must be None, -1 or positive, got {mid}")
    return nn.Sequential(nn.Linear(dim, mid), nn.LayerNorm(mid), nn.LeakyReLU(0.01), nn.Linear(mid, dim))


def feature_map(t: Tensor) -> Tensor:
    """phi(t) = elu(t) + 1 (strictly positive)."""
    return F.elu(t) + 1.0


def linear_attention(q: Tensor, k: Tensor, v: Tensor, eps: float = EPS) -> Tensor:
    """Normalized non-causal linear attention on feature-mapped (B, H, N, dh) tensors (N = query length).

    The 1/N is split into two N^-1/2 factors (official fp16 range trick); the output has q's shape.
    """
    n = q.shape[-2]
    kv = (k * n**-0.5).transpose(-1, -2) @ (v * n**-0.5)  # (B, H, dh, dh)
    z = q @ k.mean(dim=-2, keepdim=True).transpose(-1, -2) + eps  # (B, H, N, 1)
    return (q @ kv) / z


class GeneralizedLinearAttention(Configurable, nn.Module):
    """LinFusion self-attention for ``dim`` channels in ``heads`` heads (see module docstring)."""

    def __init__(
        self, dim: int, heads: int, projection_mid_dim: int | None = None, chunk_size: int | None = None
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.chunk_size = dim, heads, chunk_size
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.to_q_ = _residual_mlp(dim, projection_mid_dim)
        self.to_k_ = _residual_mlp(dim, projection_mid_dim)

    def _heads(self, t: Tensor) -> Tensor:  # (B, N, d) -> (B, H, N, dh), channel c in head c // dh
        b, n, _ = t.shape
        return t.view(b, n, self.heads, -1).transpose(1, 2)

    def _q(self, x: Tensor) -> Tensor:
        return feature_map(self._heads(self.to_q(x + self.to_q_(x))))

    def _kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return feature_map(self._heads(self.to_k(x + self.to_k_(x)))), self._heads(self.to_v(x))

    def _out(self, o: Tensor) -> Tensor:
        b, _, n, _ = o.shape
        return self.to_out[1](self.to_out[0](o.transpose(1, 2).reshape(b, n, self.dim)))

    def forward(
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Called by diffusers' transformer blocks like ``attn1``; mask and extra kwargs are ignored (as official)."""
        if hidden_states.dim() == 4:  # (B, C, H, W) input as diffusers Attention accepts it
            b, c, h, w = hidden_states.shape
            out = self.forward(hidden_states.flatten(2).transpose(1, 2), encoder_hidden_states)
            return out.transpose(1, 2).reshape(b, c, h, w)
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.dim:
            raise ValueError(f"expected hidden states (B, N, {self.dim}), got {tuple(hidden_states.shape)}")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        n = hidden_states.shape[1]
        if self.chunk_size is None or max(n, context.shape[1]) <= self.chunk_size:
            k, v = self._kv(context)
            return self._out(linear_attention(self._q(hidden_states), k, v))
        return self._chunked(hidden_states, context, self.chunk_size)

    def _chunked(self, x: Tensor, context: Tensor, size: int) -> Tensor:
        """Same result, two passes over token chunks: state (kv, sum k) in fp32, then outputs chunk by chunk."""
        n = x.shape[1]
        kv = ksum = None
        for part in context.split(size, dim=1):
            k, v = self._kv(part)
            k32 = k.float()
            part_kv, part_k = k32.transpose(-1, -2) @ v.float(), k32.sum(dim=-2, keepdim=True)
            kv = part_kv if kv is None else kv + part_kv
            ksum = part_k if ksum is None else ksum + part_k
        kv, kmean = (kv / n).to(x.dtype), (ksum / context.shape[1]).to(x.dtype)
        outs = []
        for part in x.split(size, dim=1):
            q = self._q(part)
            outs.append(self._out((q @ kv) / (q @ kmean.transpose(-1, -2) + EPS)))
        return torch.cat(outs, dim=1)
