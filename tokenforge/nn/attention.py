"""Multi-head attention on ``F.scaled_dot_product_attention``, with a static KV cache for sampling.

One `Attention` covers the variants tokenforge's methods use:

- projections: fused ``qkv`` (LlamaGen ``wqkv``, VAR ``mat_qkv``), separate ``q``/``k``/``v`` (FlexTok
  ``wq/wk/wv``), or ``q`` + ``kv`` (cross-attention, ENAT); output ``proj`` (LlamaGen ``wo``);
  optional biases, and VAR/BEiT-style ``q_bias`` / ``v_bias`` with the key bias fixed at zero
  (``zero_k_bias`` is a persistent buffer, as in VAR's state dict);
- masks: causal, block-causal (`block_causal_mask`, e.g. VAR scales or FlexTok's ``causal_last``), or any
  boolean (True = may attend) / additive float mask broadcastable to ``(B, H, L, S)``;
- QK-norm per head (``"layernorm"`` / ``"rmsnorm"``, FlexTok) or VAR's L2-normalised q, k with a learned
  per-head log-scale ``scale_mul`` (official ``scale_mul_1H11``, init log 4, capped at log 100) and softmax
  scale 1; any custom softmax scale (FlexTok: 8 / head_dim);
- grouped KV heads (``num_kv_heads < num_heads``), a RoPE hook (a table from `tokenforge.nn.rope`);
- `KVCache`: preallocated ``(B, H_kv, S_max, D)`` buffers written at ``input_pos``. Cached decoding gives
  the same result as the full-sequence pass; one-token decoding steps use `single_query_attention`
  (matmul + softmax + matmul) instead of SDPA, whose fused kernels are slow for a single query.

Rows of a mask that allow no key at all give NaN in SDPA, as in PyTorch; mask padding columns, not rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.nn.norms import LayerNorm, RMSNorm
from tokenforge.nn.rope import apply_rope

MAX_LOG_SCALE = math.log(100.0)  # VAR caps the learned q scale at exp(log 100)


def causal_mask(q_len: int, k_len: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``(q_len, k_len)`` mask: the queries are the LAST ``q_len`` positions of ``k_len`` keys."""
    k_len = q_len if k_len is None else k_len
    q_pos = torch.arange(k_len - q_len, k_len, device=device)
    return torch.arange(k_len, device=device)[None, :] <= q_pos[:, None]


def block_causal_mask(lengths: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """Boolean ``(L, L)`` mask, ``L = sum(lengths)``: a token of block i attends to every token of blocks <= i.

    VAR: ``lengths = [pn**2 for pn in patch_nums]``. FlexTok ``causal_last``: ``[n_patches] + [1] * n_registers``
    (patches see patches; register j sees all patches and registers <= j).
    """
    block = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.as_tensor(lengths, device=device))
    return block[None, :] <= block[:, None]


def single_query_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float | None) -> Tensor:
    """Attention of one query per row over a KV cache, ``q (B, H, 1, D)``: matmul, float32 softmax, matmul.

    Cached decoding uses this instead of SDPA: on the H200 SDPA picks cuDNN's flash kernel, built for long
    queries, which took 43 us per call and half of GPT-B's sampling time (batch 128, 264 cached keys);
    these three ops fuse under ``torch.compile``. Same values as SDPA's math backend up to rounding.
    ``mask``: boolean (True = attend) or additive, broadcastable to ``(B, H, 1, S)``.
    """
    scores = (q @ k.transpose(-2, -1)).float() * (q.shape[-1] ** -0.5 if scale is None else scale)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    return scores.softmax(dim=-1).to(v.dtype) @ v


def _as_sdpa_mask(mask: Tensor) -> Tensor:
    """Insert the head axis of a ``(B, L, S)`` mask; ``(L, S)`` and 4-D masks broadcast as they are."""
    return mask[:, None] if mask.dim() == 3 else mask


def _and_masks(mask: Tensor, keep: Tensor) -> Tensor:
    """Restrict ``mask`` (boolean or additive) to the positions where the boolean ``keep`` is True."""
    keep = _as_sdpa_mask(keep)
    if mask.dtype == torch.bool:
        return _as_sdpa_mask(mask) & keep
    return _as_sdpa_mask(mask).masked_fill(~keep, float("-inf"))


class KVCache(nn.Module):
    """Static key/value buffers ``(B, H_kv, S_max, D)``; `update` writes at ``input_pos`` and returns the whole cache.

    Buffers are non-persistent: a cache never enters a state dict.
    """

    def __init__(
        self, batch_size: int, max_seq_len: int, num_heads: int, head_dim: int,
        dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        shape = (batch_size, num_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def max_seq_len(self) -> int:
        return self.k.shape[2]

    def update(self, input_pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k, v`` ``(B, H_kv, L, D)`` at positions ``input_pos`` ``(L,)``; return ``(B, H_kv, S_max, D)``."""
        batch = k.shape[0]
        if batch > self.k.shape[0] or k.shape[1:] != (self.k.shape[1], len(input_pos), self.k.shape[3]):
            raise ValueError(
                f"KV cache holds {tuple(self.k.shape)} (B, H_kv, S_max, D); got keys {tuple(k.shape)} for "
                f"{len(input_pos)} positions. Call setup_kv_cache with a large enough batch and length."
            )
        if not torch.compiler.is_compiling() and int(input_pos.max()) >= self.max_seq_len:  # host sync: eager only
            raise ValueError(f"input_pos {int(input_pos.max())} is beyond the cache length {self.max_seq_len}")
        self.k[:batch, :, input_pos] = k.to(self.k.dtype)
        self.v[:batch, :, input_pos] = v.to(self.v.dtype)
        return self.k[:batch], self.v[:batch]

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()


class Attention(Configurable, nn.Module):
    """Multi-head (self- or cross-) attention; see the module docstring for the options."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv: str = "fused",
        qkv_bias: bool = False,
        qv_bias: bool = False,
        out_bias: bool = False,
        qk_norm: str | None = None,
        qk_norm_eps: float = 1e-5,
        qk_norm_affine: bool = False,
        l2_norm_qk: bool = False,
        scale: float | None = None,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        if head_dim is None and dim % num_heads:
            raise ValueError(f"dim ({dim}) is not divisible by num_heads ({num_heads}); pass head_dim")
        if qkv not in ("fused", "separate", "q_kv"):
            raise ValueError(f"qkv must be 'fused', 'separate' or 'q_kv', got {qkv!r}")
        if qv_bias and (qkv != "fused" or qkv_bias):
            raise ValueError("qv_bias (q and v biases with a zero k bias) needs qkv='fused' and qkv_bias=False")
        if qk_norm is not None and l2_norm_qk:
            raise ValueError("choose either qk_norm or l2_norm_qk, not both")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = head_dim or dim // num_heads
        self.layout, self.l2_norm_qk, self.attn_dropout = qkv, l2_norm_qk, attn_dropout
        self.scale = scale if scale is not None else (1.0 if l2_norm_qk else self.head_dim**-0.5)
        q_dim, kv_dim = num_heads * self.head_dim, num_kv_heads * self.head_dim
        ctx_dim = context_dim or dim
        if qkv == "fused":
            self.qkv = nn.Linear(dim, q_dim + 2 * kv_dim, bias=qkv_bias)
        elif qkv == "separate":
            self.q = nn.Linear(dim, q_dim, bias=qkv_bias)
            self.k = nn.Linear(ctx_dim, kv_dim, bias=qkv_bias)
            self.v = nn.Linear(ctx_dim, kv_dim, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, q_dim, bias=qkv_bias)
            self.kv = nn.Linear(ctx_dim, 2 * kv_dim, bias=qkv_bias)
        if qv_bias:
            self.q_bias = nn.Parameter(torch.zeros(q_dim))
            self.v_bias = nn.Parameter(torch.zeros(kv_dim))
            self.register_buffer("zero_k_bias", torch.zeros(kv_dim))
        else:
            self.q_bias = self.v_bias = self.zero_k_bias = None
        if qk_norm is not None:
            norm = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}.get(qk_norm)
            if norm is None:
                raise ValueError(f"qk_norm must be 'layernorm', 'rmsnorm' or None, got {qk_norm!r}")
            self.q_norm = norm(self.head_dim, eps=qk_norm_eps, affine=qk_norm_affine)
            self.k_norm = norm(self.head_dim, eps=qk_norm_eps, affine=qk_norm_affine)
        else:
            self.q_norm = self.k_norm = None
        self.scale_mul = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0))) if l2_norm_qk else None
        self.proj = nn.Linear(q_dim, dim, bias=out_bias)
        self.proj_dropout = nn.Dropout(proj_dropout)
        self.kv_cache: KVCache | None = None

    # ------------------------------------------------------------------ cache
    def setup_kv_cache(
        self, batch_size: int, max_seq_len: int, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> KVCache:
        """Allocate a static cache; forward calls with ``input_pos`` then read and write it."""
        weight = self.proj.weight
        self.kv_cache = KVCache(batch_size, max_seq_len, self.num_kv_heads, self.head_dim,
                                dtype or weight.dtype, device or weight.device)
        return self.kv_cache

    def clear_kv_cache(self) -> None:
        self.kv_cache = None

    # ------------------------------------------------------------------ forward
    def _project(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if self.layout == "fused":
            if context is not None:
                raise ValueError("cross-attention (context) needs qkv='separate' or 'q_kv'")
            bias = self.qkv.bias
            if self.q_bias is not None:
                bias = torch.cat([self.q_bias, self.zero_k_bias, self.v_bias])
            return F.linear(x, self.qkv.weight, bias).split([q_dim, kv_dim, kv_dim], dim=-1)
        source = x if context is None else context
        if self.layout == "separate":
            return self.q(x), self.k(source), self.v(source)
        k, v = self.kv(source).unflatten(-1, (2, self.num_kv_heads, self.head_dim)).unbind(-3)
        return self.q(x), k.flatten(-2), v.flatten(-2)

    def heads(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v as ``(B, heads, L, head_dim)`` after QK-norm (or L2-norm with the learned scale): everything
        before the attention kernel, shared with kernels other than SDPA (FlexTok's flex path)."""
        q, k, v = self._project(x, context)
        q = q.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        k = k.unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = v.unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.l2_norm_qk:
            q = F.normalize(q, dim=-1) * self.scale_mul.clamp_max(MAX_LOG_SCALE).exp()
            k = F.normalize(k, dim=-1)
        return q, k, v

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        mask: Tensor | None = None,
        causal: bool = False,
        rope: Tensor | None = None,
        input_pos: Tensor | None = None,
    ) -> Tensor:
        """``x`` ``(B, L, dim)`` -> ``(B, L, dim)``.

        ``rope``: table rows for the positions of ``x`` (``(L, D/2, 2)`` or ``(B, L, D/2, 2)``), applied to q and k.
        ``input_pos`` ``(L,)``: write k, v into the KV cache at these positions and attend over the cache; with
        ``causal`` query i sees cache positions <= input_pos[i], otherwise every position <= max(input_pos)
        (the cache is assumed filled in order); a given ``mask`` must then cover ``(L, S_max)`` columns.
        """
        batch, length = x.shape[:2]
        q, k, v = self.heads(x, context)
        if rope is not None:
            if context is not None:
                raise ValueError("rope is applied to self-attention only; pass context=None")
            q, k = apply_rope(q, rope), apply_rope(k, rope)

        is_causal = False
        if input_pos is not None:
            if self.kv_cache is None:
                raise RuntimeError("input_pos given but no KV cache: call setup_kv_cache(batch_size, max_seq_len)")
            input_pos = torch.as_tensor(input_pos, device=x.device).reshape(-1)
            k, v = self.kv_cache.update(input_pos, k, v)
            keys = torch.arange(k.shape[2], device=x.device)[None, :]
            keep = keys <= (input_pos[:, None] if causal else input_pos.max())
            keep = keep.expand(length, -1)
            mask = keep if mask is None else _and_masks(mask, keep)
        elif causal:
            if mask is None:
                is_causal = True
            else:
                mask = _and_masks(mask, causal_mask(length, k.shape[2], device=x.device))
        if mask is not None:
            mask = _as_sdpa_mask(mask.to(x.device))
            if mask.dtype != torch.bool:
                mask = mask.to(q.dtype)
        if self.num_kv_heads != self.num_heads:
            repeat = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if input_pos is not None and length == 1 and not self.training:
            out = single_query_attention(q, k.to(q.dtype), v.to(q.dtype), mask, self.scale)
        else:
            out = F.scaled_dot_product_attention(
                q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, is_causal=is_causal,
                dropout_p=self.attn_dropout if self.training else 0.0, scale=self.scale,
            )
        return self.proj_dropout(self.proj(out.transpose(1, 2).reshape(batch, length, -1)))
