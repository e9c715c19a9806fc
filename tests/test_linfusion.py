"""LinFusion: the attention math by hand, official layout, mount order, and parity with the shared fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tokenforge.generators.linfusion import GeneralizedLinearAttention, LinFusion
from tokenforge.generators.linfusion.linfusion import default_modules_list
from tokenforge.hub import CheckpointError, from_official
from tokenforge.parity import check


def naive(module: GeneralizedLinearAttention, x: torch.Tensor) -> torch.Tensor:
    """out_n = sum_m phi(q_n).phi(k_m) v_m / (sum_m phi(q_n).phi(k_m) + 1e-4 N), loops over heads."""
    b, n, d = x.shape
    dh = d // module.heads
    q = module.to_q(x + module.to_q_(x))
    k = module.to_k(x + module.to_k_(x))
    v = module.to_v(x)
    out = torch.empty_like(q)
    for h in range(module.heads):
        s = slice(h * dh, (h + 1) * dh)
        qh, kh = F.elu(q[..., s]) + 1, F.elu(k[..., s]) + 1
        w = qh @ kh.transpose(1, 2)  # (B, N, N) explicit pair weights
        out[..., s] = (w @ v[..., s]) / (w.sum(-1, keepdim=True) + 1e-4 * n)
    return module.to_out[0](out)


def randomize(module: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


@pytest.mark.parametrize("mid", [None, 8, -1])
def test_attention_matches_hand_formula(mid: int | None) -> None:
    module = GeneralizedLinearAttention(16, 4, projection_mid_dim=mid)
    randomize(module)
    x = torch.randn(2, 37, 16, generator=torch.Generator().manual_seed(1)) * 1.5
    torch.testing.assert_close(module(x), naive(module, x), atol=1e-5, rtol=1e-5)


def test_mid_dim_semantics() -> None:
    assert GeneralizedLinearAttention(16, 4, 8).to_q_[0].weight.shape == (8, 16)
    assert GeneralizedLinearAttention(16, 4).to_k_[3].weight.shape == (16, 16)
    ident = GeneralizedLinearAttention(16, 4, -1)
    assert isinstance(ident.to_q_, torch.nn.Identity) and len(ident.state_dict()) == 5
    randomize(ident)
    x = torch.randn(1, 9, 16)
    # Identity residual: q and k see 2x, v sees x -> scaling only to_v by 1/2 and feeding 2x must not differ
    with torch.no_grad():
        q2 = F.elu(ident.to_q(2 * x)) + 1
        assert torch.allclose(F.elu(ident.to_q(x + ident.to_q_(x))) + 1, q2)
    with pytest.raises(ValueError, match="divisible"):
        GeneralizedLinearAttention(10, 4)


def test_chunked_path_equals_full_and_is_resolution_normalised() -> None:
    full = GeneralizedLinearAttention(16, 2)
    randomize(full)
    chunked = GeneralizedLinearAttention(16, 2, chunk_size=7)
    chunked.load_state_dict(full.state_dict())
    x = torch.randn(2, 50, 16)
    torch.testing.assert_close(chunked(x), full(x), atol=1e-6, rtol=1e-5)
    # normalisation: duplicating every token leaves each token's output unchanged (weighted average)
    y = full(torch.cat([x, x], dim=1))
    torch.testing.assert_close(y[:, :50], full(x), atol=1e-5, rtol=1e-4)
    # image-shaped input (B, C, H, W) is accepted like diffusers Attention
    img = x[:, :49].transpose(1, 2).reshape(2, 16, 7, 7)
    torch.testing.assert_close(full(img).flatten(2).transpose(1, 2), full(x[:, :49]))


def test_fixture_parity(fixtures_dir: Path) -> None:
    lines = check(fixtures_dir / "linfusion", "linfusion")
    assert len(lines) == 24 and all(line.status == "ok" for line in lines), "\n".join(map(str, lines))


def test_official_layout_round_trip_and_mount_order(fixtures_dir: Path, tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel

    folder = fixtures_dir / "linfusion"
    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet")).eval()
    official = json.loads((folder / "linfusion" / "config.json").read_text())["modules_list"]
    assert default_modules_list(unet) == official  # down, up, mid (named_modules order)
    assert [m["projection_mid_dim"] for m in default_modules_list(unet, mid_dim_scale=16)] == [2, 2, 2, 4]

    lin = from_official("linfusion", folder / "linfusion")
    lin.save_official(tmp_path / "lf")
    ours, theirs = load_file(str(tmp_path / "lf" / "diffusion_pytorch_model.safetensors")), load_file(
        str(folder / "linfusion" / "diffusion_pytorch_model.safetensors"))
    assert ours.keys() == theirs.keys() and len(ours) == 17 * len(official)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    saved = json.loads((tmp_path / "lf" / "config.json").read_text())
    assert saved["_class_name"] == "LinFusion" and saved["modules_list"] == official

    inputs = load_file(str(folder / "inputs.safetensors"))
    args = (inputs["sample"][:1], inputs["timestep"][:1], inputs["encoder_hidden_states"][:1])
    with torch.no_grad():
        base = unet(*args).sample
        lin.mount_to(unet)
        assert unet.get_submodule(official[3]["module_name"]) is lin._modules["3"]
        mounted = unet(*args).sample
        lin.unmount()
        again = unet(*args).sample
    assert (mounted - base).abs().max() > 1e-2 and torch.equal(again, base)


def test_bad_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="config.json"):
        LinFusion.load_official(tmp_path)
    lin = LinFusion([{"module_name": "x.attn1", "dim_n": 8, "heads": 2, "projection_mid_dim": None}])
    lin.save_official(tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    cfg["modules_list"][0]["dim_n"] = 16
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="to_q.weight"):
        LinFusion.load_official(tmp_path / "a")
