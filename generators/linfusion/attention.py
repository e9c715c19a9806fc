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
- GPU-minded layout (same math): heads are never transposed out; kv for all heads is one (d x d) GEMM over the
  tokens (``baddbmm``, 1/N applied in the fp32 epilogue instead of scaling k and v by N^-1/2), masked to its
  per-head block diagonal, and numerators + per-head denominators come out of one (N x d) @ (d x d+H) GEMM.
  No fp32 copies of token tensors in half precision; only the (d x d) state is accumulated in fp32 when chunked.
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
    """phi(t) = elu(t) + 1 (strictly positive); the +1 is in place on elu's fresh output (autograd-safe)."""
    return F.elu(t).add_(1.0)


def linear_attention(q: Tensor, k: Tensor, v: Tensor, eps: float = EPS) -> Tensor:
    """Normalized non-causal linear attention on feature-mapped (B, H, N, dh) tensors (N = query length).

    The reference form, head by head (the 1/N split into two N^-1/2 factors as official); the modules use the
    merged-head form `merged_linear_attention`, which is the same math.
    """
    n = q.shape[-2]
    kv = (k * n**-0.5).transpose(-1, -2) @ (v * n**-0.5)  # (B, H, dh, dh)
    z = q @ k.mean(dim=-2, keepdim=True).transpose(-1, -2) + eps  # (B, H, N, 1)
    return (q @ kv) / z


def _head_mask(dim: int, heads: int, like: Tensor) -> Tensor:
    """(dim, dim + heads) 0/1 matrix: a block-diagonal of ones (dh x dh per head), then a channel->head indicator."""
    head = torch.arange(dim, device=like.device) // (dim // heads)
    blocks = head[:, None] == head[None, :]
    indicator = head[:, None] == torch.arange(heads, device=like.device)[None, :]
    return torch.cat([blocks, indicator], dim=1).to(like.dtype)


def kv_state(k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """(B, d, d) all-pairs ``scale * k^T v`` and the (B, d) token sum of k in fp32.

    One GEMM with fp32 accumulation whose ``alpha`` applies the scale before rounding to k's dtype, so fp16 cannot
    overflow (the official code scales k and v by N^-1/2 first, two extra passes over the tokens for the same aim).
    """
    b, _, d = k.shape
    out = torch.empty(b, d, v.shape[-1], device=k.device, dtype=k.dtype)
    return torch.baddbmm(out, k.transpose(1, 2), v, beta=0.0, alpha=scale), k.sum(dim=1, dtype=torch.float32)


def merged_output(q: Tensor, kv: Tensor, kmean: Tensor, heads: int, eps: float = EPS) -> Tensor:
    """out = per-head (q_h kv_h) / (q_h . kmean_h + eps) for (B, N, d) inputs, in ONE (B,N,d)x(B,d,d+H) GEMM.

    The per-head kv blocks are kept by masking the all-pairs ``kv`` to its block diagonal, and the H denominators
    ride along as extra columns (kmean masked per head), so no head transposes or (B, H, N, 1) matmuls are needed;
    the extra FLOPs (d instead of dh per output) are negligible next to the memory traffic on tensor cores.
    """
    b, n, d = q.shape
    mask = _head_mask(d, heads, kv)
    state = torch.cat([kv, kmean.unsqueeze(-1).expand(b, d, heads)], dim=2) * mask  # (B, d, d + H)
    pad = -state.shape[-1] % 8  # keep the GEMM's N a multiple of 8 for tensor cores
    if pad:
        state = F.pad(state, (0, pad))
    res = torch.bmm(q, state)
    num = res[..., :d].unflatten(-1, (heads, d // heads))
    return (num / (res[..., d : d + heads].unsqueeze(-1) + eps)).flatten(2)


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

    def _q(self, x: Tensor) -> Tensor:
        return feature_map(self.to_q(x + self.to_q_(x)))

    def _kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return feature_map(self.to_k(x + self.to_k_(x))), self.to_v(x)

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
        n, m = hidden_states.shape[1], context.shape[1]
        size = self.chunk_size or max(n, m)
        kv = ksum = None
        for part in context.split(size, dim=1):  # pass 1: the global state (kv, sum of k)
            k, v = self._kv(part)
            part_kv, part_k = kv_state(k, v, 1.0 / n)
            del k, v
            if kv is None:
                kv, ksum = part_kv, part_k
            else:  # several chunks: accumulate in fp32
                kv, ksum = kv.float() + part_kv, ksum + part_k
        kv, kmean = kv.to(hidden_states.dtype), (ksum / m).to(hidden_states.dtype)
        outs = [self.to_out[1](self.to_out[0](merged_output(self._q(part), kv, kmean, self.heads)))
                for part in hidden_states.split(size, dim=1)]  # pass 2: outputs chunk by chunk
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
