"""Normalisation layers and adaptive (conditioned) modulation.

- `RMSNorm`: ``x * rsqrt(mean(x^2) + eps) * weight`` computed in float32 and cast back (LlamaGen).
- `LayerNorm`: float32 layer norm with optional affine/bias (FlexTok's affine-free ``Fp32LayerNorm``, VAR's
  ``ln_wo_grad``, Vocos' final norm).
- `AdaLayerNorm`: Vocos' affine-free layer norm followed by ``* scale[id] + shift[id]`` from embedding tables.
- `AdaLNModulation`: ``SiLU -> Linear(cond_dim, n * dim)`` split into named chunks in a method's own order
  (`ADALN_ORDERS`: DiT, VAR's 6-way gamma/scale/shift, FlexTok), zero-initialised (adaLN-zero).
- `modulate(x, shift, scale) = x * (1 + scale) + shift`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.config import Configurable

# Chunk orders of the modulation vector, named by their layout (the official codes split it these ways).
# ``*1`` modulates the attention branch, ``*2`` the MLP branch; ``gate`` multiplies a branch output (VAR calls
# it gamma).
ADALN_ORDERS: dict[str, list[str]] = {
    "shift_scale_gate": ["shift1", "scale1", "gate1", "shift2", "scale2", "gate2"],  # DiT
    "gates_scales_shifts": ["gate1", "gate2", "scale1", "scale2", "shift1", "shift2"],  # VAR
    "gates_shift_scale": ["gate1", "gate2", "shift1", "scale1", "shift2", "scale2"],  # FlexTok
    "scale_shift": ["scale1", "shift1"],  # VAR AdaLNBeforeHead
    "shift_scale": ["shift1", "scale1"],  # DiT / FlexTok final layer
}


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``x * (1 + scale) + shift`` (DiT convention: zero modulation is the identity)."""
    return x * (1 + scale) + shift


class RMSNorm(Configurable, nn.Module):
    """Root-mean-square norm over the last axis, computed in float32 (as LlamaGen); ``weight`` key as official."""

    def __init__(self, dim: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return out * self.weight if self.weight is not None else out


class LayerNorm(Configurable, nn.Module):
    """Layer norm over the last axis in float32; ``affine=False`` gives no parameters at all (FlexTok, VAR)."""

    def __init__(self, dim: int, eps: float = 1e-5, affine: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), (self.dim,), weight, bias, self.eps).type_as(x)


def make_norm(kind: str, dim: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    """``"rmsnorm"`` or ``"layernorm"`` by name (what configs write)."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps, affine=affine)
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps, affine=affine)
    raise ValueError(f"unknown norm {kind!r}; use 'rmsnorm' or 'layernorm'")


class AdaLayerNorm(Configurable, nn.Module):
    """Vocos ``AdaLayerNorm``: affine-free layer norm, then ``* scale[id] + shift[id]`` (tables init 1 / 0).

    Keys ``scale.weight`` and ``shift.weight`` match the official ones. ``cond_id`` is a LongTensor of one
    element (broadcast over the batch, as users pass ``tensor([0])``) or one per sample.
    """

    def __init__(self, num_embeddings: int, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.scale = nn.Embedding(num_embeddings, dim)
        self.shift = nn.Embedding(num_embeddings, dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: Tensor, cond_id: Tensor) -> Tensor:
        """``x``: ``(B, T, dim)``."""
        cond_id = torch.as_tensor(cond_id, device=x.device).reshape(-1)
        scale, shift = self.scale(cond_id)[:, None], self.shift(cond_id)[:, None]
        return F.layer_norm(x, (self.dim,), eps=self.eps) * scale + shift


class AdaLNModulation(Configurable, nn.Module):
    """``SiLU -> Linear(cond_dim, groups * len(order) * dim)`` returning named chunks; zero-init (adaLN-zero).

    ``order`` is a key of `ADALN_ORDERS` or a list of chunk names in the official split order. With
    ``groups > 1`` (FlexTok's ``adaLN_expansion``) the output is laid out group-major
    ``(groups, len(order), dim)`` and ``group_ids`` (one per token) picks the set each token uses, e.g. one
    set for patch tokens and one for register tokens. The official key ``adaLN_modulation.1`` / ``ada_lin.1``
    maps to ``linear``.
    """

    def __init__(
        self, dim: int, cond_dim: int | None = None, order: str | Sequence[str] = "shift_scale_gate", groups: int = 1,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.order = list(ADALN_ORDERS[order]) if isinstance(order, str) else list(order)
        self.dim, self.groups = dim, groups
        self.linear = nn.Linear(cond_dim or dim, groups * len(self.order) * dim)
        if zero_init:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, cond: Tensor, group_ids: Tensor | None = None) -> dict[str, Tensor]:
        """``cond`` ``(B, C)`` gives chunks ``(B, 1, dim)``; ``(B, L, C)`` (per token) gives ``(B, L, dim)``.

        With ``group_ids`` ``(L,)`` the chunks are ``(B, L, dim)``, token ``l`` using set ``group_ids[l]``.
        """
        out = self.linear(F.silu(cond))
        if cond.dim() == 2:
            out = out[:, None]
        out = out.unflatten(-1, (self.groups, len(self.order), self.dim))
        if group_ids is not None:
            if out.shape[1] != 1:
                raise ValueError("group_ids needs one condition vector per sample, cond of shape (B, C)")
            out = out[:, 0, group_ids.to(out.device)]  # (B, L, n, dim)
        elif self.groups == 1:
            out = out[..., 0, :, :]
        else:
            raise ValueError(f"this modulation has {self.groups} groups: pass group_ids (one per token)")
        return dict(zip(self.order, out.unbind(-2)))
