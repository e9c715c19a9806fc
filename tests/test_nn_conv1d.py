"""1D conv blocks: EnCodec frame count and padding values, weight-norm key conversion, Vocos blocks, real speech."""

from __future__ import annotations

import math

import pytest
import soundfile
import torch
import torch.nn.functional as F
from torch import nn

from tokenforge.nn import (
    AttnBlock1d,
    Conv1d,
    ConvNeXt1dBlock,
    ConvTranspose1d,
    ResnetBlock1d,
    ConvResidualUnit1d,
    convert_weight_norm_keys,
    extra_padding,
    pad1d,
)


@pytest.mark.parametrize("stride", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("length", [1, 7, 24, 100, 321, 1000])
def test_frames_are_ceil_length_over_stride(stride, length):
    kernel = 7 if stride == 1 else 2 * stride
    conv = Conv1d(1, 2, kernel, stride=stride)
    assert conv(torch.randn(1, 1, length)).shape[-1] == math.ceil(length / stride)
    causal = Conv1d(1, 2, kernel, stride=stride, causal=True)
    assert causal(torch.randn(1, 1, length)).shape[-1] == math.ceil(length / stride)


def test_padding_split_hand_values():
    assert Conv1d(1, 1, 7).padding(50) == (3, 3)
    assert Conv1d(1, 1, 4, stride=2).padding(10) == (1, 1)  # total 2, no extra
    assert Conv1d(1, 1, 4, stride=2).padding(11) == (1, 2)  # one extra sample on the right
    assert Conv1d(1, 1, 10, stride=5).padding(24000) == (3, 2)  # total 5: left gets the larger half
    assert Conv1d(1, 1, 3, dilation=2).padding(20) == (2, 2)  # effective kernel 5
    assert Conv1d(1, 1, 4, stride=2, causal=True).padding(11) == (2, 1)
    assert extra_padding(11, 4, 2, 2) == 1 and extra_padding(10, 4, 2, 2) == 0


def test_reflect_padding_values():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(pad1d(x, 2, 3), torch.tensor([[3.0, 2, 1, 2, 3, 4, 3, 2, 1]]))
    # shorter than the pad: zero-extend to [1, 2, 0, 0], reflect, drop the two added samples
    assert torch.equal(pad1d(torch.tensor([[1.0, 2.0]]), 3, 0), torch.tensor([[0.0, 0, 2, 1, 2]]))
    assert torch.equal(pad1d(x, 1, 1, mode="constant", value=9.0), torch.tensor([[9.0, 1, 2, 3, 4, 9]]))


def test_conv_output_values_match_manual_padding():
    conv = Conv1d(2, 3, 4, stride=2, norm="none")
    x = torch.randn(1, 2, 11)
    manual = F.conv1d(F.pad(x, (1, 2), mode="reflect"), conv.conv.weight, conv.conv.bias, stride=2)
    assert torch.allclose(conv(x), manual, atol=1e-6)


def test_causal_conv_ignores_the_future():
    conv = Conv1d(1, 2, 5, causal=True)
    x = torch.randn(1, 1, 30)
    y = x.clone()
    y[..., 20:] = torch.randn(10)
    assert torch.allclose(conv(x)[..., :20], conv(y)[..., :20], atol=1e-6)
    assert not torch.allclose(conv(x)[..., 20:], conv(y)[..., 20:])


def test_weight_norm_legacy_keys_round_trip():
    conv = Conv1d(3, 4, 3)
    keys = set(conv.state_dict())
    assert keys == {"conv.bias", "conv.parametrizations.weight.original0", "conv.parametrizations.weight.original1"}
    g, v = torch.rand(4, 1, 1) + 0.5, torch.randn(4, 3, 3)
    legacy = {"conv.weight_g": g, "conv.weight_v": v, "conv.bias": torch.zeros(4)}
    conv.load_state_dict(convert_weight_norm_keys(legacy))
    expected = g * v / v.norm(dim=(1, 2), keepdim=True)  # w = g * v / ||v||, norm over all but dim 0
    assert torch.allclose(conv.conv.weight, expected, atol=1e-6)
    back = convert_weight_norm_keys(conv.state_dict(), to="legacy")
    assert set(back) == set(legacy) and torch.equal(back["conv.weight_g"], g)
    with pytest.raises(ValueError):
        convert_weight_norm_keys(legacy, to="old")


def test_transposed_conv_lengths():
    for stride in (2, 5, 8):
        up = ConvTranspose1d(2, 1, 2 * stride, stride=stride)
        assert up(torch.randn(1, 2, 13)).shape[-1] == 13 * stride
        assert ConvTranspose1d(2, 1, 2 * stride, stride, causal=True)(torch.randn(1, 2, 13)).shape[-1] == 13 * stride


def test_seanet_res_block_formula():
    block = ConvResidualUnit1d(4)
    assert set(block.state_dict()) >= {"block.1.conv.parametrizations.weight.original0", "shortcut.conv.bias"}
    x = torch.randn(2, 4, 9)
    expected = block.shortcut(x) + block.block[3](F.elu(block.block[1](F.elu(x))))
    assert torch.allclose(block(x), expected)
    assert block.block[1].conv.out_channels == 2  # compress 2


def test_convnext_block_layer_scale_and_adanorm():
    block = ConvNeXt1dBlock(8, 16, layer_scale_init=0.0)
    assert block.gamma is None
    x = torch.randn(2, 8, 10)
    h = block.norm(block.dwconv(x).transpose(1, 2))
    expected = x + block.pwconv2(F.gelu(block.pwconv1(h))).transpose(1, 2)
    assert torch.allclose(block(x), expected, atol=1e-6)
    scaled = ConvNeXt1dBlock(8, 16, layer_scale_init=0.5, adanorm_num_embeddings=4)
    assert torch.allclose(scaled.gamma, torch.full((8,), 0.5))
    with pytest.raises(ValueError, match="cond_id"):
        scaled(x)
    assert scaled(x, torch.tensor([1])).shape == x.shape


def test_resnet_and_attention_blocks():
    res = ResnetBlock1d(32, 64, num_groups=8).eval()
    x = torch.randn(2, 32, 12)
    h = res.conv2(F.silu(res.norm2(res.conv1(F.silu(res.norm1(x))))))
    assert torch.allclose(res(x), res.nin_shortcut(x) + h, atol=1e-5)
    attn = AttnBlock1d(32, num_groups=8)
    n = attn.norm(x)
    q, k, v = attn.q(n), attn.k(n), attn.v(n)
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(32), dim=-1)
    expected = x + attn.proj_out(torch.einsum("bts,bcs->bct", w, v))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_strided_stack_on_real_speech(shared_data):
    """SEANet-like downsampling of a real 24 kHz prompt gives ceil(L / 320) frames and finite features."""
    path = sorted((shared_data / "speech24k").glob("*.flac"))[0]
    audio, rate = soundfile.read(path, dtype="float32")
    assert rate == 24000
    wave = torch.from_numpy(audio)[None, None]
    layers: list[nn.Module] = [Conv1d(1, 4, 7)]
    width = 4
    for r in (2, 4, 5, 8):
        layers += [ConvResidualUnit1d(width), nn.ELU(), Conv1d(width, 2 * width, 2 * r, stride=r)]
        width *= 2
    with torch.no_grad():
        out = nn.Sequential(*layers)(wave)
    assert out.shape == (1, 64, math.ceil(wave.shape[-1] / 320))
    assert torch.isfinite(out).all() and out.std() > 0
