"""VQGAN inference: taming blocks, encode/decode consistency, official LlamaGen / VAR loaders, hub round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from tokenforge import hub
from tokenforge.nn.conv2d import AttnBlock, Downsample, ResnetBlock, Upsample, split_fused_qkv
from tokenforge.tokenizers.base import Tokens
from tokenforge.tokenizers.quantizers.residual import MultiScaleResidualQuantizer
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.vqgan import VQGAN
from tokenforge.tokenizers.vqgan.official import to_llamagen_state, to_var_state

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def load_images(folder: Path, size: int = 32, names: tuple[str, ...] = PHOTOS) -> torch.Tensor:
    """Real photos: shorter side resized to ``size``, centre crop, [-1, 1]."""
    out = []
    for name in names:
        image = Image.open(folder / name).convert("RGB")
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                             Image.Resampling.BICUBIC)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32)
        out.append(torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0)
    return torch.stack(out)


def tiny_vqgan(quantizer: torch.nn.Module | None = None, **kw) -> VQGAN:
    quantizer = quantizer or VectorQuantizer(64, 8, l2_normalize=True)
    args = dict(ch=32, ch_mult=[1, 2, 2], num_res_blocks=1, z_channels=32)
    return VQGAN(quantizer, **{**args, **kw})


# ----------------------------------------------------------------------------- blocks


def test_resample_blocks_shapes_and_padding() -> None:
    x = torch.randn(2, 32, 8, 10)
    down = Downsample(32)
    assert down(x).shape == (2, 32, 4, 5)  # pad right/bottom by one, 3x3 stride 2, no padding
    with torch.no_grad():
        down.conv.weight.zero_(); down.conv.bias.zero_(); down.conv.weight[:, :, 2, 2] = torch.eye(32)
    # bottom-right tap of each window: output (i, j) reads x[2i+2, 2j+2], the zero pad on the last row/column
    expected = F.pad(x, (0, 1, 0, 1))[:, :, 2::2, 2::2]
    assert expected.shape == (2, 32, 4, 5) and float(expected[:, :, -1].abs().max()) == 0.0
    assert torch.allclose(down(x), expected)
    up = Upsample(32)
    with torch.no_grad():
        up.conv.weight.zero_(); up.conv.bias.zero_(); up.conv.weight[:, :, 1, 1] = torch.eye(32)
    assert torch.equal(up(x), x.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_attention_block_matches_taming_bmm_formula() -> None:
    block = AttnBlock(32).eval()
    x = torch.randn(2, 32, 4, 5)
    b, c, h, w = x.shape
    y = block.norm(x)
    q = block.q(y).reshape(b, c, h * w).permute(0, 2, 1)
    k = block.k(y).reshape(b, c, h * w)
    v = block.v(y).reshape(b, c, h * w)
    attn = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)
    ref = x + block.proj_out(torch.bmm(v, attn.permute(0, 2, 1)).reshape(b, c, h, w))
    assert torch.allclose(block(x), ref, atol=1e-5)


def test_resnet_block_shortcut_and_fused_qkv_split() -> None:
    assert not hasattr(ResnetBlock(32, 32), "nin_shortcut")
    block = ResnetBlock(32, 64)
    assert block(torch.randn(1, 32, 4, 4)).shape == (1, 64, 4, 4) and block.nin_shortcut.kernel_size == (1, 1)
    fused = torch.arange(12.0).reshape(6, 2, 1, 1)
    split = split_fused_qkv({"a.attn.0.qkv.weight": fused, "a.norm.weight": torch.ones(2)})
    assert set(split) == {"a.attn.0.q.weight", "a.attn.0.k.weight", "a.attn.0.v.weight", "a.norm.weight"}
    assert torch.equal(split["a.attn.0.k.weight"], fused[2:4])


# ----------------------------------------------------------------------------- model


def test_encode_decode_consistency_on_real_images(shared_data: Path) -> None:
    x = load_images(shared_data / "images")
    model = tiny_vqgan().eval()
    with torch.no_grad():
        tokens = model.encode(x)
        out = model(x)
        image = model.decode(tokens)
    assert tokens.ids.shape == (4, 8, 8) and tokens.ids.dtype == torch.long
    assert 0 <= int(tokens.ids.min()) and int(tokens.ids.max()) < model.vocab_size == 64
    assert tokens.meta == {"image_size": [32, 32], "latent_size": [8, 8]}
    assert model.token_layout == "grid" and model.modality == "image"
    assert torch.equal(out.tokens.ids, tokens.ids)
    assert image.shape == x.shape and float(image.abs().max()) <= 1.0
    # decode(encode(x)) is forward's reconstruction (clamped); straight-through arithmetic differs by ulps
    assert torch.allclose(image, out.x_hat.clamp(-1, 1), atol=1e-5)
    assert torch.equal(model.decode(tokens.ids), image)
    # the codes that decode sees are the quantizer's rows for these ids
    assert torch.allclose(model.quantizer.decode(tokens.ids), F.normalize(model.quantizer.embedding.weight, dim=-1)[tokens.ids].movedim(-1, 1))
    assert out.aux_loss.ndim == 0 and out.aux_loss > 0 and 0 < float(out.metrics["usage"]) <= 1


def test_bad_inputs_give_clear_errors() -> None:
    model = tiny_vqgan()
    with pytest.raises(ValueError, match="not divisible"):
        model.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.encode(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="ids"):
        model.decode(Tokens())
    with pytest.raises(ValueError, match="divisible by 32"):
        tiny_vqgan(ch=24)


def test_multiscale_quantizer_gives_scales_layout_and_hub_round_trip(tmp_path: Path, shared_data: Path) -> None:
    quantizer = MultiScaleResidualQuantizer(32, 8, scales=[1, 2, 4, 8])
    model = tiny_vqgan(quantizer, quant_conv_kernel=3).eval()
    x = load_images(shared_data / "images")
    with torch.no_grad():
        tokens = model.encode(x)
    assert model.token_layout == "scales"
    assert [t.shape for t in tokens.ids] == [(4, 1), (4, 4), (4, 16), (4, 64)]
    loaded = hub.from_pretrained(hub.save_pretrained(model, tmp_path / "vqgan"))
    assert isinstance(loaded, VQGAN) and loaded.init_args == model.init_args
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded.encode(x).ids, tokens.ids))
        assert torch.equal(loaded.decode(tokens), model.decode(tokens))


# ----------------------------------------------------------------------------- official checkpoints


def test_var_vqvae_matches_official_fixture(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "var_msrq"
    model = hub.from_official("var_vqvae", folder)
    inputs, outputs = load_file(str(folder / "inputs.safetensors")), load_file(str(folder / "outputs.safetensors"))
    assert model.init_args["ch_mult"] == [1, 2] and model.init_args["quant_conv_kernel"] == 3
    with torch.no_grad():
        f = model.features(inputs["img"])
        assert (f - outputs["f_BChw"]).abs().max() <= 1e-5
        dec = model.decode_latents(outputs["fhat_6"])
        assert (dec - outputs["dec_unclamped"]).abs().max() <= 1e-5
        tokens = model.encode(inputs["img"])
        assert all(torch.equal(ids, outputs[f"idx_Bl_{s}"]) for s, ids in enumerate(tokens.ids))
        assert (model.decode(tokens) - outputs["rec_img_from_idx"]).abs().max() <= 1e-5
    # the inverse key map reproduces the official file exactly (fused qkv, reversed decoder levels)
    original = load_file(str(folder / "vae_state_dict.safetensors"))
    back = to_var_state(model)
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_var_vqvae_parity_function_passes_on_the_fixture(fixtures_dir: Path) -> None:
    from tokenforge.parity import compare
    from tokenforge.tokenizers.vqgan.official import var_vqvae_parity

    folder = fixtures_dir / "var_msrq"
    expected = load_file(str(folder / "outputs.safetensors"))
    lines = [compare(expected[name], result, name) for name, result in var_vqvae_parity(folder).items()]
    assert [line.name for line in lines] == ["f_BChw", "dec_unclamped", "rec_img", "rec_img_from_idx"]
    assert all(line.status == "ok" for line in lines), [str(line) for line in lines]


def _llamagen_file(model: VQGAN, path: Path, wrap: bool = True) -> Path:
    state = to_llamagen_state(model)
    assert "quantize.embedding.weight" in state and "encoder.conv_blocks.0.res.0.conv1.weight" in state
    state["quantize.codebook_used"] = torch.zeros(65536)  # LlamaGen's usage window, not a parameter of ours
    torch.save({"model": state} if wrap else state, path)
    return path


@pytest.mark.parametrize("wrap", [True, False], ids=["model_dict", "bare_state"])
def test_llamagen_layout_loads_and_reproduces_outputs(tmp_path: Path, shared_data: Path, wrap: bool) -> None:
    model = tiny_vqgan(decoder_ch=64, decoder_num_res_blocks=2).eval()  # an "enhanced decoder" variant
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    loaded = hub.from_official("llamagen_vq", _llamagen_file(model, tmp_path / "vq.pt", wrap))
    assert isinstance(loaded, VQGAN) and loaded.init_args == model.init_args
    x = load_images(shared_data / "images")
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.tokens.ids, b.tokens.ids) and torch.equal(a.x_hat, b.x_hat)


def test_llamagen_wrong_shape_names_the_key(tmp_path: Path) -> None:
    model = tiny_vqgan()
    state = to_llamagen_state(model)
    state["decoder.conv_blocks.1.res.0.conv2.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save({"model": state}, tmp_path / "bad.pt")
    with pytest.raises(hub.CheckpointError, match=r"shape mismatch[\s\S]*decoder\.conv_blocks\.1\.res\.0\.conv2\.weight"):
        hub.from_official("llamagen_vq", tmp_path / "bad.pt")
    torch.save({"model": {"foo": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(hub.CheckpointError, match="LlamaGen"):
        hub.from_official("llamagen_vq", tmp_path / "other.pt")
