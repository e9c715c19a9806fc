"""Transformer blocks and a stack: pre-norm (LlamaGen, FlexTok encoder) and adaLN (VAR, DiT, FlexTok).

- `Block`: ``x += attn(norm1(x)); x += mlp(norm2(x))`` with RMSNorm or LayerNorm, SwiGLU or GELU MLP and
  optional drop-path. Keys: ``norm1, attn, norm2, mlp`` (LlamaGen: ``attention_norm, attention, ffn_norm,
  feed_forward``; one regex each).
- `AdaLNBlock`: ``x += gate1 * attn(modulate(norm1(x), shift1, scale1))``, same for the MLP with ``*2``;
  norms carry no parameters. The modulation (`AdaLNModulation`, key ``adaln.linear``) is zero-initialised,
  so a fresh block is the identity (adaLN-zero). ``order="gates_scales_shifts"`` reproduces VAR's 6-way
  split (gamma1, gamma2, scale1, scale2, shift1, shift2), ``"shift_scale_gate"`` DiT's, ``"gates_shift_scale"``
  FlexTok's (with ``adaln_groups=2``
  for its separate patch / register modulation).
- `Transformer`: ``depth`` blocks with drop-path rising linearly to ``drop_path`` (as VAR / timm), optional
  final norm, and KV-cache set-up for sampling.

Deliberate simplification: VAR's ``shared_aln`` (one adaLN shared by all blocks, only d36) is not built in;
compute the shared modulation once outside and pass per-token ``cond`` if it is ever needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.nn.attention import Attention
from tokenforge.nn.mlp import make_mlp
from tokenforge.nn.norms import AdaLNModulation, LayerNorm, make_norm, modulate


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's branch with probability ``p`` and rescale by 1/(1-p)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def _mlp(kind: str, dim: int, hidden_dim: int | None, mlp_ratio: float, options: dict | None) -> nn.Module:
    options = dict(options or {})
    if hidden_dim is None and kind != "swiglu":
        hidden_dim = int(dim * mlp_ratio)
    return make_mlp(kind, dim, hidden_dim, **options)


class Block(Configurable, nn.Module):
    """Pre-norm transformer block (attention + MLP, each residual)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        norm: str = "rmsnorm",
        norm_eps: float = 1e-5,
        norm_affine: bool = True,
        mlp: str = "swiglu",
        mlp_hidden_dim: int | None = None,
        mlp_ratio: float = 4.0,
        mlp_options: dict[str, Any] | None = None,
        attn_options: dict[str, Any] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim, norm_eps, norm_affine)
        self.attn = Attention(dim, num_heads, **(attn_options or {}))
        self.norm2 = make_norm(norm, dim, norm_eps, norm_affine)
        self.mlp = _mlp(mlp, dim, mlp_hidden_dim, mlp_ratio, mlp_options)
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, causal: bool = False, rope: Tensor | None = None,
        input_pos: Tensor | None = None,
    ) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask=mask, causal=causal, rope=rope, input_pos=input_pos))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class AdaLNBlock(Configurable, nn.Module):
    """Transformer block conditioned by adaLN(-zero) modulation; identity at init."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        cond_dim: int | None = None,
        order: str | Sequence[str] = "shift_scale_gate",
        adaln_groups: int = 1,
        norm_eps: float = 1e-6,
        mlp: str = "gelu_tanh",
        mlp_hidden_dim: int | None = None,
        mlp_ratio: float = 4.0,
        mlp_options: dict[str, Any] | None = None,
        attn_options: dict[str, Any] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=norm_eps, affine=False)
        self.attn = Attention(dim, num_heads, **(attn_options or {}))
        self.norm2 = LayerNorm(dim, eps=norm_eps, affine=False)
        self.mlp = _mlp(mlp, dim, mlp_hidden_dim, mlp_ratio, mlp_options)
        self.adaln = AdaLNModulation(dim, cond_dim, order, groups=adaln_groups)
        missing = {"shift1", "scale1", "gate1", "shift2", "scale2", "gate2"} - set(self.adaln.order)
        if missing:
            raise ValueError(f"an adaLN block needs all six chunks; order lacks {sorted(missing)}")
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: Tensor, cond: Tensor, mask: Tensor | None = None, causal: bool = False, rope: Tensor | None = None,
        input_pos: Tensor | None = None, group_ids: Tensor | None = None,
    ) -> Tensor:
        """``cond``: ``(B, cond_dim)`` (or per token ``(B, L, cond_dim)``); ``group_ids`` ``(L,)`` with adaln_groups > 1."""
        m = self.adaln(cond, group_ids)
        h = self.attn(modulate(self.norm1(x), m["shift1"], m["scale1"]), mask=mask, causal=causal, rope=rope,
                      input_pos=input_pos)
        x = x + self.drop_path(h * m["gate1"])
        h = self.mlp(modulate(self.norm2(x), m["shift2"], m["scale2"]))
        return x + self.drop_path(h * m["gate2"])


class Transformer(Configurable, nn.Module):
    """``depth`` blocks (`Block`, or `AdaLNBlock` when ``adaln``) with linearly rising drop-path.

    ``block_options`` are the keyword arguments of the block class (everything but dim, heads, drop_path).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        adaln: bool = False,
        drop_path: float = 0.0,
        final_norm: str | None = None,
        final_norm_eps: float = 1e-5,
        block_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        cls = AdaLNBlock if adaln else Block
        rates = torch.linspace(0, drop_path, depth).tolist() if depth > 1 else [drop_path] * depth
        self.adaln = adaln
        self.blocks = nn.ModuleList(
            [cls(dim, num_heads, drop_path=rate, **(block_options or {})) for rate in rates]
        )
        self.norm = make_norm(final_norm, dim, final_norm_eps) if final_norm else None

    def setup_kv_cache(
        self, batch_size: int, max_seq_len: int, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """Give every block's attention a static KV cache; calls with ``input_pos`` then decode incrementally."""
        for block in self.blocks:
            block.attn.setup_kv_cache(batch_size, max_seq_len, dtype, device)

    def clear_kv_cache(self) -> None:
        for block in self.blocks:
            block.attn.clear_kv_cache()

    def forward(
        self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None, causal: bool = False,
        rope: Tensor | None = None, input_pos: Tensor | None = None, group_ids: Tensor | None = None,
    ) -> Tensor:
        for block in self.blocks:
            if self.adaln:
                if cond is None:
                    raise ValueError("an adaLN transformer needs cond")
                x = block(x, cond, mask=mask, causal=causal, rope=rope, input_pos=input_pos, group_ids=group_ids)
            else:
                x = block(x, mask=mask, causal=causal, rope=rope, input_pos=input_pos)
        return self.norm(x) if self.norm is not None else x
