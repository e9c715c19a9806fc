"""Attention against a naive softmax(QK^T * scale + mask) V, for every mask type and option; KV-cache decoding."""

from __future__ import annotations

import math

import pytest
import torch

from tokenforge.nn import Attention, block_causal_mask, causal_mask, rope_table_1d, rope_table_2d


def naive_attention(attn: Attention, x, mask=None, context=None, rope=None):
    """Independent reference: explicit projections, matmul, softmax, value sum."""
    H, Hkv, D = attn.num_heads, attn.num_kv_heads, attn.head_dim
    B, L, _ = x.shape
    src = x if context is None else context
    if attn.layout == "fused":
        w = attn.qkv.weight
        b = attn.qkv.bias if attn.qkv.bias is not None else torch.zeros(w.shape[0])
        if attn.q_bias is not None:
            b = torch.cat([attn.q_bias, torch.zeros(Hkv * D), attn.v_bias])
        wq, wk, wv = w.split([H * D, Hkv * D, Hkv * D])
        bq, bk, bv = b.split([H * D, Hkv * D, Hkv * D])
        q, k, v = x @ wq.T + bq, src @ wk.T + bk, src @ wv.T + bv
    elif attn.layout == "separate":
        q, k, v = attn.q(x), attn.k(src), attn.v(src)
    else:
        q = attn.q(x)
        kv = attn.kv(src).reshape(B, -1, 2, Hkv, D)
        k, v = kv[:, :, 0].reshape(B, -1, Hkv * D), kv[:, :, 1].reshape(B, -1, Hkv * D)
    q = q.reshape(B, L, H, D).transpose(1, 2)
    k = k.reshape(B, -1, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, 1)
    v = v.reshape(B, -1, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, 1)
    if attn.q_norm is not None:
        q = (q - q.mean(-1, keepdim=True)) / torch.sqrt(q.var(-1, unbiased=False, keepdim=True) + 1e-5)
        k = (k - k.mean(-1, keepdim=True)) / torch.sqrt(k.var(-1, unbiased=False, keepdim=True) + 1e-5)
    if attn.l2_norm_qk:
        q = q / q.norm(dim=-1, keepdim=True) * torch.exp(torch.clamp(attn.scale_mul, max=math.log(100)))
        k = k / k.norm(dim=-1, keepdim=True)
    if rope is not None:
        def rot(t):
            t2 = t.reshape(*t.shape[:-1], D // 2, 2)
            c, s = rope[..., 0], rope[..., 1]
            return torch.stack([t2[..., 0] * c - t2[..., 1] * s, t2[..., 0] * s + t2[..., 1] * c], -1).flatten(-2)
        q, k = rot(q), rot(k)
    scores = q @ k.transpose(-1, -2) * attn.scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    out = torch.softmax(scores, -1) @ v
    return attn.proj(out.transpose(1, 2).reshape(B, L, H * D))


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module


@pytest.mark.parametrize("mask_kind", ["none", "causal", "block", "bool", "additive", "batch_bool"])
def test_masks_match_naive(mask_kind):
    attn = _randomise(Attention(32, 4, qkv_bias=True, out_bias=True)).eval()
    x = torch.randn(2, 7, 32)
    if mask_kind == "none":
        mask, kwargs = None, {}
    elif mask_kind == "causal":
        mask, kwargs = causal_mask(7), {"causal": True}
    elif mask_kind == "block":
        mask = block_causal_mask([1, 2, 4])
        kwargs = {"mask": mask}
    elif mask_kind == "bool":
        mask = torch.rand(7, 7) > 0.4
        mask[:, 0] = True  # every query keeps at least one key
        kwargs = {"mask": mask}
    elif mask_kind == "additive":
        mask = torch.randn(7, 7)
        kwargs = {"mask": mask}
    else:
        mask = torch.rand(2, 7, 7) > 0.5
        mask[..., 3] = True
        kwargs = {"mask": mask}
    expected = naive_attention(attn, x, mask[:, None] if mask is not None and mask.dim() == 3 else mask)
    assert torch.allclose(attn(x, **kwargs), expected, atol=1e-5)


def test_block_causal_mask_values():
    m = block_causal_mask([1, 2, 1])
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)
    assert torch.equal(causal_mask(2, 4), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))


def test_causal_combined_with_mask_and_additive():
    attn = _randomise(Attention(16, 2)).eval()
    x = torch.randn(1, 5, 16)
    pad = torch.tensor([True, True, False, True, True])[None, :].expand(5, 5)
    pad = pad | torch.eye(5, dtype=torch.bool)
    expected = naive_attention(attn, x, pad & causal_mask(5))
    assert torch.allclose(attn(x, mask=pad, causal=True), expected, atol=1e-5)
    additive = torch.randn(5, 5)
    expected = naive_attention(attn, x, additive.masked_fill(~causal_mask(5), float("-inf")))
    assert torch.allclose(attn(x, mask=additive, causal=True), expected, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"qkv": "separate", "qk_norm": "layernorm", "scale": 8 / 8},  # FlexTok: QK-norm, scale 8/head_dim
        {"qkv": "fused", "qv_bias": True, "l2_norm_qk": True, "out_bias": True},  # VAR
        {"qkv": "fused", "num_kv_heads": 2},  # grouped KV heads
        {"qkv": "q_kv", "qkv_bias": True, "num_kv_heads": 1},
        {"qkv": "fused", "scale": 0.25 / math.sqrt(8)},
    ],
)
def test_options_match_naive(options):
    attn = _randomise(Attention(32, 4, **options)).eval()
    if attn.l2_norm_qk:
        with torch.no_grad():  # one head above the log(100) cap, one below
            attn.scale_mul.copy_(torch.tensor([6.0, 1.0, 0.5, 2.0]).view(1, 4, 1, 1))
    x = torch.randn(2, 6, 32)
    assert torch.allclose(attn(x, causal=True), naive_attention(attn, x, causal_mask(6)), atol=1e-5)


def test_var_scale_is_capped_and_softmax_scale_one():
    attn = Attention(32, 4, qv_bias=True, l2_norm_qk=True)
    assert attn.scale == 1.0
    assert torch.allclose(attn.scale_mul, torch.full((1, 4, 1, 1), math.log(4.0)))
    assert "zero_k_bias" in attn.state_dict() and torch.all(attn.zero_k_bias == 0)
    with torch.no_grad():
        attn.q_bias.fill_(1.0)
        attn.v_bias.fill_(2.0)
        x = torch.zeros(1, 3, 32)  # projections of zero are the biases alone
        q, k, v = attn._project(x, None)
    assert torch.all(q == 1) and torch.all(k == 0) and torch.all(v == 2)


def test_cross_attention_matches_naive():
    attn = _randomise(Attention(16, 2, qkv="separate", context_dim=24)).eval()
    x, ctx = torch.randn(2, 3, 16), torch.randn(2, 5, 24)
    assert torch.allclose(attn(x, context=ctx), naive_attention(attn, x, context=ctx), atol=1e-5)
    with pytest.raises(ValueError, match="cross-attention"):
        Attention(16, 2)(x, context=torch.randn(2, 5, 16))


def test_rope_hook_matches_naive():
    attn = _randomise(Attention(32, 4)).eval()
    x = torch.randn(2, 6, 32)
    table = rope_table_1d(6, 8)
    assert torch.allclose(attn(x, rope=table, causal=True), naive_attention(attn, x, causal_mask(6), rope=table),
                          atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"num_kv_heads": 2}, {"qv_bias": True, "l2_norm_qk": True}])
def test_kv_cache_equals_full_causal_pass(options):
    attn = _randomise(Attention(32, 4, **options)).eval()
    length = 9
    x = torch.randn(2, length, 32)
    table = rope_table_2d(2, 8, cls_token_num=5)  # 9 rows; zero rows for the first 5 like LlamaGen conditions
    full = attn(x, causal=True, rope=table)
    attn.setup_kv_cache(batch_size=2, max_seq_len=16)
    steps = [attn(x[:, :3], causal=True, rope=table[:3], input_pos=torch.arange(3))]  # prefill 3
    for t in range(3, length):
        pos = torch.tensor([t])
        steps.append(attn(x[:, t:t + 1], causal=True, rope=table[pos], input_pos=pos))
    attn.clear_kv_cache()
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    assert "kv_cache.k" not in attn.state_dict()


def test_kv_cache_by_blocks_equals_block_causal_pass():
    """VAR-style sampling: one scale at a time, every token sees all cached tokens of earlier and its own scale."""
    attn = _randomise(Attention(32, 4, qv_bias=True, l2_norm_qk=True)).eval()
    lengths = [1, 4, 9]
    x = torch.randn(2, sum(lengths), 32)
    full = attn(x, mask=block_causal_mask(lengths))
    attn.setup_kv_cache(batch_size=4, max_seq_len=20)  # a larger batch than used is fine
    out, start = [], 0
    for n in lengths:
        pos = torch.arange(start, start + n)
        out.append(attn(x[:, pos], input_pos=pos))
        start += n
    assert torch.allclose(torch.cat(out, 1), full, atol=1e-5)


def test_kv_cache_errors():
    attn = Attention(16, 2)
    with pytest.raises(RuntimeError, match="setup_kv_cache"):
        attn(torch.randn(1, 1, 16), input_pos=torch.tensor([0]))
    attn.setup_kv_cache(1, 4)
    with pytest.raises(ValueError, match="beyond the cache length"):
        attn(torch.randn(1, 1, 16), input_pos=torch.tensor([4]))
    with pytest.raises(ValueError, match="KV cache holds"):
        attn(torch.randn(2, 1, 16), input_pos=torch.tensor([0]))


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        Attention(32, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="not divisible"):
        Attention(30, 4)
    with pytest.raises(ValueError, match="qkv must be"):
        Attention(32, 4, qkv="packed")
    with pytest.raises(ValueError, match="qv_bias"):
        Attention(32, 4, qkv="separate", qv_bias=True)


def test_sdpa_dropout_only_in_training():
    attn = _randomise(Attention(16, 2, attn_dropout=0.5))
    x = torch.randn(1, 4, 16)
    attn.eval()
    assert torch.equal(attn(x), attn(x))
    attn.train()
    assert not torch.allclose(attn(x), attn.eval()(x))


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_single_query_attention_matches_sdpa(mask_kind):
    """The one-token decoding path (matmul + softmax + matmul) gives SDPA's values."""
    from tokenforge.nn.attention import single_query_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, s, 16, generator=g) for s in (1, 11, 11))
    mask = {"none": None, "bool": torch.rand(3, 1, 1, 11, generator=g) > 0.3,
            "additive": torch.randn(3, 4, 1, 11, generator=g)}[mask_kind]
    if mask is not None and mask.dtype == torch.bool:
        mask[..., 0] = True  # every row attends somewhere
    for scale in (None, 1.0):
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        assert torch.allclose(single_query_attention(q, k, v, mask, scale), ref, atol=1e-6)
