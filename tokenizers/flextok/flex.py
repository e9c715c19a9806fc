"""FlexAttention for the FlexTok encoder's ``causal_last`` register mask; dense-mask SDPA stays the fallback.

The encoder sequence is ``[n patches; R registers]``: patches see patches, register j sees every patch and
registers <= j. As a dense boolean ``[L, L]`` mask (`dense_register_mask`) this rules out SDPA's flash kernel
and materialises the mask. Here the same rule is a FlexAttention ``mask_mod`` (`register_mask_mod`); its
`BlockMask` lets the compiled kernel skip whole blocks (patch queries never visit register keys, register
queries skip later register blocks) and needs no ``[L, L]`` tensor.

Backends (`resolve_attention`): ``"sdpa"`` = the dense mask through ``F.scaled_dot_product_attention`` (the
reference; exactly what the official ``use_flex_attention=False`` path computes); ``"flex"`` = the compiled
``flex_attention`` with a cached `BlockMask`; ``"auto"`` = the ``TOKENFORGE_FLEXTOK_ATTENTION`` environment
variable (``flex`` / ``sdpa``) if set, else sdpa: flex is opt-in until its speed and first-call compile time
are measured on the H200 (``bench flextok --attention flex``). Flex does run on CPU with this
torch (inductor's C++ kernel), but its first call compiles for ~20 s at the tiny test size and CPU runs gain
nothing from block sparsity at those sizes, so ``auto`` keeps CPU on SDPA. FlexAttention has no backward
on CPU, so gradients on CPU always take SDPA (an explicit ``"flex"`` raises there).

Caches: one `BlockMask` per ``(num_patches, num_registers, device)`` (built once, ~1 s on CPU), one compiled
``flex_attention`` per process (``torch.compile`` default: static shapes first, a recompile with dynamic
sizes when the batch or layout changes, so the recompile limit is never reached by a few layouts).

`flex_self_attention` reuses the shared `Attention`'s projections and QK-norm (its ``heads``) and swaps
only the kernel, so both paths share every weight and every step before the kernel.

The decoder keeps plain SDPA: its [patches; registers] sequence is fully visible (official mask ``full``), so
it passes no mask and SDPA already picks flash.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from tokenforge.nn.attention import Attention, block_causal_mask

ATTENTION_ENV = "TOKENFORGE_FLEXTOK_ATTENTION"
BACKENDS = ("auto", "flex", "sdpa")


def flex_available() -> bool:
    """True when this torch ships ``torch.nn.attention.flex_attention``."""
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def inductor_cpu_isa() -> str:
    """The vector ISA inductor compiles CPU kernels for ('avx512 ...', 'avx2', 'INVALID_VEC_ISA' for none)."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    return str(pick_vec_isa())


def cpu_flex_is_trusted() -> bool:
    """Compiled flex on CPU matches SDPA only with AVX-512 kernels: under ``ATEN_CPU_CAPABILITY=avx2`` it differed
    by up to 1.87 in half the outputs, and without vectorisation it does not compile (torch 2.11, measured)."""
    return inductor_cpu_isa().startswith("avx512")


def resolve_attention(choice: str, device: torch.device, needs_grad: bool = False) -> str:
    """``"auto" | "flex" | "sdpa"`` -> the backend to run on ``device`` (``"flex"`` or ``"sdpa"``).

    FlexAttention has no CPU backward in this torch: ``auto`` (env included) then falls back to SDPA, an
    explicit ``"flex"`` raises.
    """
    if choice not in BACKENDS:
        raise ValueError(f"attention must be one of {BACKENDS}, got {choice!r}")
    explicit = choice == "flex"
    if choice == "auto":
        env = os.environ.get(ATTENTION_ENV, "").strip().lower()
        if env and env not in ("flex", "sdpa"):
            raise ValueError(f"{ATTENTION_ENV} must be 'flex' or 'sdpa', got {env!r}")
        choice = env or "sdpa"  # flex stays opt-in until measured on a GPU (module docstring)
    if choice == "flex" and not flex_available():
        raise RuntimeError(f"attention='flex' needs torch.nn.attention.flex_attention (torch {torch.__version__} "
                           "lacks it); use attention='sdpa'")
    if choice == "flex" and needs_grad and device.type == "cpu":
        if explicit:
            raise ValueError("attention='flex' has no backward on CPU (FlexAttention limitation); use 'sdpa' or "
                             "'auto' to train on CPU, or run under torch.no_grad()")
        choice = "sdpa"
    return choice


def register_mask_mod(num_patches: int) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """FlexAttention ``mask_mod`` of ``causal_last``: key kv is visible from query q iff kv < n or n <= kv <= q."""
    n = num_patches

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return (kv_idx < n) | ((q_idx >= n) & (kv_idx <= q_idx))

    return mask_mod


def dense_register_mask(num_patches: int, num_registers: int, device: torch.device | str | None = None) -> Tensor:
    """The same rule as a boolean ``[L, L]`` mask (True = may attend), for SDPA: the reference path."""
    return block_causal_mask([num_patches] + [1] * num_registers, device=device)


@lru_cache(maxsize=32)
def register_block_mask(num_patches: int, num_registers: int, device: str, block_size: int = 128) -> Any:
    """Cached `BlockMask` for ``[n patches; R registers]`` (batch and heads broadcast)."""
    from torch.nn.attention.flex_attention import create_block_mask

    length = num_patches + num_registers
    return create_block_mask(register_mask_mod(num_patches), None, None, length, length, device=device,
                             BLOCK_SIZE=block_size)


@lru_cache(maxsize=1)
def compiled_flex_attention() -> Callable[..., Tensor]:
    """``flex_attention`` compiled once per process (uncompiled it materialises the scores and is slow)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def flex_self_attention(attn: Attention, x: Tensor, block_mask: Any, compiled: bool = True) -> Tensor:
    """`Attention.forward` for self-attention with a `BlockMask` instead of a dense mask.

    Same projections, QK-norm, softmax scale and output projection as the shared layer; only the kernel
    differs. ``compiled=False`` runs eager ``flex_attention`` (tests: checks the mask semantics quickly).
    """
    if attn.l2_norm_qk or attn.num_kv_heads != attn.num_heads or (attn.training and attn.attn_dropout > 0):
        raise ValueError("the flex path covers FlexTok's attention only (no l2-norm qk, grouped KV or attention dropout)")
    batch, length = x.shape[:2]
    q, k, v = attn.heads(x)  # (B, H, L, D)
    if compiled:
        if x.device.type == "cpu" and not cpu_flex_is_trusted():
            raise ValueError(f"compiled flex attention on this CPU ({inductor_cpu_isa()} kernels) gives wrong outputs "
                             "with torch 2.11 (measured); use attention='sdpa' on CPU")
        fn = compiled_flex_attention()
    else:
        from torch.nn.attention.flex_attention import flex_attention as fn
    out = fn(q, k.to(q.dtype), v.to(q.dtype), block_mask=block_mask, scale=attn.scale)
    return attn.proj_dropout(attn.proj(out.transpose(1, 2).reshape(batch, length, -1)))


def flex_transformer(transformer: torch.nn.Module, x: Tensor, block_mask: Any, compiled: bool = True) -> Tensor:
    """Run a pre-norm `Transformer` (``Block`` stack) with flex self-attention in every block."""
    if transformer.adaln:
        raise ValueError("flex_transformer runs pre-norm blocks; the adaLN decoder needs no mask (use SDPA)")
    for block in transformer.blocks:
        x = x + block.drop_path(flex_self_attention(block.attn, block.norm1(x), block_mask, compiled))
        x = x + block.drop_path(block.mlp(block.norm2(x)))
    return transformer.norm(x) if transformer.norm is not None else x


__all__ = ["ATTENTION_ENV", "BACKENDS", "dense_register_mask", "flex_available", "flex_self_attention",
           "flex_transformer", "register_block_mask", "register_mask_mod", "resolve_attention"]
