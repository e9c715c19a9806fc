"""Transformer feed-forward layers: SwiGLU (LlamaGen, FlexTok) and a GELU MLP (VAR, ENAT, DiT).

Linear names follow the official codes through one ``prefix`` argument: ``prefix="w"`` gives LlamaGen's
``w1, w2, w3`` and ``prefix="fc"`` gives FlexTok's / timm's ``fc1, fc2(, fc3)``. In both conventions
layer 2 is the output projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.config import Configurable


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of ``k`` that is >= ``n``."""
    return n if n % k == 0 else n + k - (n % k)


def swiglu_hidden_dim(dim: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """LlamaGen's rule: ``int(2 * 4 * dim / 3)``, times ``ffn_dim_multiplier`` if given, rounded up to ``multiple_of``.

    GPT-B (768) -> 2048, GPT-L (1024) -> 2816, GPT-XL (1280) -> 3584; ``multiple_of=1`` gives FlexTok's
    ``int(2/3 * 4 * dim)``.
    """
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return find_multiple(hidden, multiple_of)


class SwiGLU(Configurable, nn.Module):
    """``w2(silu(w1 x) * w3 x)``, bias-free by default; hidden width from `swiglu_hidden_dim` unless given."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int | None = None,
        multiple_of: int = 256,
        ffn_dim_multiplier: float | None = None,
        bias: bool = False,
        dropout: float = 0.0,
        prefix: str = "w",
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim or swiglu_hidden_dim(dim, multiple_of, ffn_dim_multiplier)
        self.prefix = prefix
        setattr(self, f"{prefix}1", nn.Linear(dim, self.hidden_dim, bias=bias))
        setattr(self, f"{prefix}3", nn.Linear(dim, self.hidden_dim, bias=bias))
        setattr(self, f"{prefix}2", nn.Linear(self.hidden_dim, dim, bias=bias))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up, down = (getattr(self, f"{self.prefix}{i}") for i in (1, 3, 2))
        return self.dropout(down(F.silu(gate(x)) * up(x)))


class GeluMLP(Configurable, nn.Module):
    """``fc2(gelu(fc1 x))``; ``approximate="tanh"`` for VAR / ENAT / DiT, ``"none"`` for the exact erf GELU,
    ``"quick"`` for OpenAI CLIP's QuickGELU ``x * sigmoid(1.702 x)``."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int | None = None,
        out_dim: int | None = None,
        approximate: str = "none",
        bias: bool = True,
        dropout: float = 0.0,
        prefix: str = "fc",
    ) -> None:
        super().__init__()
        if approximate not in ("none", "tanh", "quick"):
            raise ValueError(f"approximate must be 'none', 'tanh' or 'quick', got {approximate!r}")
        self.approximate, self.prefix = approximate, prefix
        hidden_dim = hidden_dim or 4 * dim
        setattr(self, f"{prefix}1", nn.Linear(dim, hidden_dim, bias=bias))
        setattr(self, f"{prefix}2", nn.Linear(hidden_dim, out_dim or dim, bias=bias))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        fc1, fc2 = getattr(self, f"{self.prefix}1"), getattr(self, f"{self.prefix}2")
        h = fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.approximate == "quick" else F.gelu(h, approximate=self.approximate)
        return self.dropout(fc2(h))


def make_mlp(kind: str, dim: int, hidden_dim: int | None = None, **kwargs) -> nn.Module:
    """``"swiglu"``, ``"gelu"`` (exact), ``"gelu_tanh"`` or ``"quick_gelu"`` (OpenAI CLIP) by name."""
    if kind == "swiglu":
        return SwiGLU(dim, hidden_dim, **kwargs)
    if kind in ("gelu", "gelu_tanh", "quick_gelu"):
        approximate = {"gelu": "none", "gelu_tanh": "tanh", "quick_gelu": "quick"}[kind]
        return GeluMLP(dim, hidden_dim, approximate=approximate, **kwargs)
    raise ValueError(f"unknown mlp {kind!r}; use 'swiglu', 'gelu', 'gelu_tanh' or 'quick_gelu'")
