"""RoPE: relative-position property, hand values, and LlamaGen's 2D table reproduced from its fixture config."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tokenforge.nn import apply_rope, rope_frequencies, rope_table_1d, rope_table_2d


def _score(q, k, table, i, j):
    """<rope(q at position i), rope(k at position j)> for single head vectors."""
    qi = apply_rope(q[None, None, None], table[i:i + 1])[0, 0, 0]
    kj = apply_rope(k[None, None, None], table[j:j + 1])[0, 0, 0]
    return float(qi @ kj)


def test_1d_score_depends_only_on_offset():
    torch.manual_seed(1)
    q, k = torch.randn(16), torch.randn(16)
    table = rope_table_1d(40, 16)
    for offset in (0, 3, -5):
        scores = [_score(q, k, table, i, i - offset) for i in range(10, 30, 4)]
        assert max(scores) - min(scores) < 1e-5
    assert abs(_score(q, k, table, 10, 7) - _score(q, k, table, 10, 3)) > 1e-3  # offsets do matter


def test_2d_score_depends_only_on_row_and_column_offsets():
    torch.manual_seed(2)
    grid, dim = 6, 16
    q, k = torch.randn(dim), torch.randn(dim)
    table = rope_table_2d(grid, dim)

    def at(r, c):
        return r * grid + c

    base = _score(q, k, table, at(3, 4), at(1, 1))  # offset (2, 3)
    assert abs(_score(q, k, table, at(4, 5), at(2, 2)) - base) < 1e-5
    assert abs(_score(q, k, table, at(2, 3), at(0, 0)) - base) < 1e-5
    assert abs(_score(q, k, table, at(3, 4), at(1, 2)) - base) > 1e-3  # offset (2, 2) differs


def test_hand_values_adjacent_pairs():
    # head_dim 4: frequencies 1 and base^-0.5 = 0.01; position 1 rotates pair 0 by 1 rad, pair 1 by 0.01 rad
    assert torch.allclose(rope_frequencies(4), torch.tensor([1.0, 0.01]))
    x = torch.tensor([1.0, 0.0, 0.0, 1.0])[None, None, None]
    out = apply_rope(x, rope_table_1d(2, 4)[1:2])[0, 0, 0]
    expected = torch.tensor([math.cos(1), math.sin(1), -math.sin(0.01), math.cos(0.01)])
    assert torch.allclose(out, expected, atol=1e-6)


def test_2d_layout_rows_then_columns():
    grid, dim = 3, 8  # two pairs per axis, frequencies 1 and 0.01
    table = rope_table_2d(grid, dim, cls_token_num=2)
    assert table.shape == (2 + 9, 4, 2)
    assert torch.all(table[:2] == 0)  # condition rows: zero cos AND zero sin
    pos = 2 + 1 * grid + 2  # row 1, column 2
    angles = torch.atan2(table[pos, :, 1], table[pos, :, 0])
    assert torch.allclose(angles, torch.tensor([1.0, 0.01, 2.0, 0.02]), atol=1e-6)


def test_condition_rows_zero_queries_and_keys():
    x = torch.randn(1, 2, 3, 8)
    table = rope_table_2d(1, 8, cls_token_num=2)  # 2 condition rows + 1 grid cell
    out = apply_rope(x, table)
    assert torch.all(out[:, :, :2] == 0)
    assert torch.allclose(out[:, :, 2], x[:, :, 2])  # grid position (0, 0): identity rotation


def test_llamagen_fixture_table(fixtures_dir):
    root = fixtures_dir / "llamagen"
    cfg = json.loads((root / "config.json").read_text())
    expected = load_file(root / "outputs.safetensors")["freqs_cis"]
    table = rope_table_2d(int(math.isqrt(cfg["block_size"])), cfg["dim"] // cfg["n_head"], cfg["rope_base"],
                          cfg["cls_token_num"])
    assert table.shape == expected.shape and table.dtype == expected.dtype
    assert (table - expected).abs().max() <= 1e-6


def test_per_sample_table_and_errors():
    x = torch.randn(2, 3, 4, 8)
    table = rope_table_1d(10, 8)
    per_sample = torch.stack([table[0:4], table[5:9]])
    out = apply_rope(x, per_sample)
    assert torch.allclose(out[0], apply_rope(x[:1], table[0:4])[0])
    assert torch.allclose(out[1], apply_rope(x[1:], table[5:9])[0])
    with pytest.raises(ValueError, match="does not fit"):
        apply_rope(x, table)
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_table_2d(4, 6)
