"""Rotary position embeddings (RoPE) in the adjacent-pair convention of LlamaGen.

Tables have shape ``(positions, head_dim // 2, 2)`` holding ``(cos, sin)`` per rotated pair; pair ``i`` is the
ADJACENT elements ``(x[2i], x[2i+1])`` of a head vector (LlamaGen / Meta Llama), not the half-split pairing of
GPT-NeoX. `apply_rope` rotates queries or keys with such a table.

LlamaGen quirk reproduced on purpose: the ``cls_token_num`` condition rows that lead the table are
``cos = sin = 0``, i.e. the condition token's query and key are multiplied by zero (not left unrotated), so it
contributes only through its value vector. Pass ``cls_token_num=0`` for tables without that prefix.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_frequencies(dim: int, base: float = 10000.0) -> Tensor:
    """``base ** (-2j / dim)`` for ``j < dim // 2``: the angular speed of each rotated pair."""
    if dim % 2:
        raise ValueError(f"RoPE needs an even number of channels, got {dim}")
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim))


def _cos_sin(angles: Tensor) -> Tensor:
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)


def _with_condition_rows(table: Tensor, cls_token_num: int) -> Tensor:
    if cls_token_num < 0:
        raise ValueError(f"cls_token_num must be >= 0, got {cls_token_num}")
    zeros = table.new_zeros(cls_token_num, *table.shape[1:])
    return torch.cat([zeros, table], dim=0)


def rope_table_1d(seq_len: int, head_dim: int, base: float = 10000.0, cls_token_num: int = 0) -> Tensor:
    """1D RoPE table ``(cls_token_num + seq_len, head_dim // 2, 2)``: position ``t`` rotates pair ``j`` by ``t * f_j``."""
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), rope_frequencies(head_dim, base))
    return _with_condition_rows(_cos_sin(angles), cls_token_num)


def rope_table_2d(grid_size: int, head_dim: int, base: float = 10000.0, cls_token_num: int = 0) -> Tensor:
    """LlamaGen's 2D RoPE table ``(cls_token_num + grid_size**2, head_dim // 2, 2)`` for a raster-ordered grid.

    The first half of the head's pairs rotates with the row index and the second half with the column index,
    each with frequencies ``base ** (-2j / (head_dim / 2))``, ``j < head_dim / 4``.
    """
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs head_dim divisible by 4 (row and column halves of pairs), got {head_dim}")
    freqs = rope_frequencies(head_dim // 2, base)  # (head_dim / 4,)
    t = torch.arange(grid_size, dtype=torch.float32)
    rows = torch.outer(t, freqs)[:, None, :].expand(grid_size, grid_size, -1)
    cols = torch.outer(t, freqs)[None, :, :].expand(grid_size, grid_size, -1)
    angles = torch.cat([rows, cols], dim=-1).reshape(grid_size * grid_size, head_dim // 2)
    return _with_condition_rows(_cos_sin(angles), cls_token_num)


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate adjacent pairs of ``x`` ``(B, H, L, D)`` by ``table`` ``(L, D/2, 2)`` or ``(B, L, D/2, 2)``.

    Computed in float32 and cast back, as LlamaGen does.
    """
    length, dim = x.shape[-2], x.shape[-1]
    if table.shape[-3:] != (length, dim // 2, 2):
        raise ValueError(
            f"RoPE table of shape {tuple(table.shape)} does not fit x of shape {tuple(x.shape)}: expected "
            f"(..., {length}, {dim // 2}, 2); slice the table with the positions of x (e.g. table[input_pos])"
        )
    if table.dim() == 4:  # per-sample positions: insert the head axis
        table = table[:, None]
    pairs = x.float().reshape(*x.shape[:-1], dim // 2, 2)
    cos, sin = table[..., 0].to(pairs.device), table[..., 1].to(pairs.device)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
    return out.flatten(-2).type_as(x)
