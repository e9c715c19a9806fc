"""FSQ: hand-computed bounds and codes, index order, full round trips, gradients, FlexTok fixture parity."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tokenforge.tokenizers.quantizers import FSQ, QuantizerOutput


def inverse_bound(codes: torch.Tensor, levels: list[int], eps: float = 1e-3) -> torch.Tensor:
    """A channel-last input z whose bound(z) lands exactly on the integer code*(L//2)."""
    out = []
    for i, level in enumerate(levels):
        half_l = (level - 1) * (1 + eps) / 2
        offset = 0.5 if level % 2 == 0 else 0.0
        target = codes[..., i] * (level // 2)
        out.append(torch.atanh((target + offset) / half_l) - math.atanh(offset / half_l))
    return torch.stack(out, dim=-1)


def test_codebook_size_dim_and_index_order():
    fsq = FSQ([3, 4, 2])
    assert fsq.codebook_size == 24 and fsq.dim == 3
    # first channel is the least significant digit: basis (1, 3, 12)
    digits = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 3, 1]])
    codes = (digits.float() - torch.tensor([1.0, 2.0, 1.0])) / torch.tensor([1.0, 2.0, 1.0])
    assert fsq.codes_to_indices_last(codes).tolist() == [1, 3, 12, 2 + 9 + 12]
    # decode of index 0 is the lowest code of every channel; even levels reach -1 but top out below 1
    assert fsq.indices_to_codes_last(torch.tensor(0)).tolist() == [-1.0, -1.0, -1.0]
    assert fsq.indices_to_codes_last(torch.tensor(23)).tolist() == [1.0, 0.5, 0.0]


def test_every_index_round_trips_through_codes_and_through_encode():
    levels = [3, 4, 2, 5]
    fsq = FSQ(levels)
    every = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes_last(every)
    assert torch.equal(fsq.codes_to_indices_last(codes), every)
    assert len({tuple(c) for c in codes.tolist()}) == fsq.codebook_size  # all codes distinct
    # channel-first contract: inputs whose bounded value sits on each integer give back every index
    z = inverse_bound(codes, levels).T.reshape(1, len(levels), -1)  # [1, dim, L]
    assert torch.equal(fsq.encode(z), every[None])
    assert torch.allclose(fsq.decode(every[None]), codes.T[None])
    out = fsq(z)
    assert torch.equal(out.indices, every[None])
    assert torch.allclose(out.quantized, codes.T[None], atol=1e-6)


def test_bound_hand_values():
    fsq = FSQ([8, 5])
    z = torch.tensor([[0.0, 0.0], [50.0, 50.0], [-50.0, -50.0]])
    bounded = fsq.bound(z)
    half_8, half_5 = 7 * 1.001 / 2, 4 * 1.001 / 2
    expected = torch.tensor([[0.0, 0.0], [half_8 - 0.5, half_5], [-half_8 - 0.5, -half_5]])
    assert torch.allclose(bounded, expected, atol=1e-5)
    # rounding then /(L//2): 8 levels -> {-1,...,0.75}, 5 levels -> {-1,...,1}
    assert fsq.quantize_last(z).tolist() == [[0.0, 0.0], [0.75, 1.0], [-1.0, -1.0]]


def test_straight_through_gradient_is_the_bound_derivative():
    levels = [8, 5, 5]
    fsq = FSQ(levels)
    z = torch.randn(2, 3, 4, 5, requires_grad=True)
    upstream = torch.randn(2, 3, 4, 5)
    out = fsq(z)
    (out.quantized * upstream).sum().backward()
    lv = torch.tensor(levels, dtype=torch.float32).view(1, 3, 1, 1)
    half_l = (lv - 1) * 1.001 / 2
    offset = (lv % 2 == 0).float() * 0.5
    t = torch.tanh(z.detach() + torch.atanh(offset / half_l))
    expected = upstream * half_l * (1 - t**2) / torch.div(lv, 2, rounding_mode="floor")
    assert torch.allclose(z.grad, expected, atol=1e-6)
    assert out.loss.item() == 0.0


def test_output_contract_metrics_and_low_precision_input():
    fsq = FSQ([4, 4])
    z = torch.randn(3, 2, 6, 7)
    out = fsq(z)
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == z.shape and out.indices.shape == (3, 6, 7)
    used = out.indices.unique().numel()
    assert out.metrics["usage"].item() == pytest.approx(used / 16)
    assert 1.0 <= out.metrics["perplexity"].item() <= used + 1e-4
    zb = z.bfloat16()
    outb = fsq(zb)  # computed in fp32 from the bf16 values
    assert outb.quantized.dtype == torch.bfloat16
    assert torch.equal(outb.indices, fsq.encode(zb.float()))


def test_bad_input_is_explained():
    fsq = FSQ([8, 8, 8, 5, 5, 5])
    with pytest.raises(ValueError, match="6 channels"):
        fsq(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"\[0, 63999\]"):
        fsq.decode(torch.tensor([[64000]]))
    with pytest.raises(ValueError, match="levels"):
        FSQ([8, 1])


def test_flextok_fixture_codes_and_token_ids(fixtures_dir):
    folder = fixtures_dir / "flextok"
    levels = json.loads((folder / "config.json").read_text())["flextok_config"]["regularizer"]["levels"]
    outputs = load_file(str(folder / "outputs.safetensors"))
    fsq = FSQ(levels)
    prequant = outputs["enc_registers_prequant"]  # [B, R, d] channel-last, as FlexTok holds it
    out = fsq(prequant.transpose(1, 2))
    assert torch.allclose(out.quantized.transpose(1, 2), outputs["quants"], atol=1e-6)
    assert torch.equal(out.indices, outputs["token_ids"])
    assert torch.equal(fsq.codes_to_indices_last(fsq.quantize_last(prequant)), outputs["token_ids"])
    assert torch.allclose(fsq.decode(outputs["token_ids"]).transpose(1, 2), outputs["quants"], atol=1e-6)
