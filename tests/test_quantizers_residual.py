"""MultiScaleResidualQuantizer: shapes (1D and 2D), hand cases, Phi rules, loss, STE, usage, real-image refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tokenforge.hub import from_pretrained, save_pretrained
from tokenforge.tokenizers.quantizers import MultiScaleResidualQuantizer, QuantizerOutput
from tokenforge.tokenizers.quantizers.residual import Phi


def real_image(shared_data, side: int = 32) -> torch.Tensor:
    img = Image.open(shared_data / "images" / "astronaut.png").convert("RGB").resize((side, side), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]


def grid_codebook() -> torch.Tensor:
    """Colours on a coarse and a fine grid (both include 0), so every residual has a sensible code."""
    coarse, fine = torch.linspace(-1, 1, 5), torch.linspace(-0.25, 0.25, 5)
    return torch.cat([torch.cartesian_prod(coarse, coarse, coarse), torch.cartesian_prod(fine, fine, fine)])


def identity_phis(q: MultiScaleResidualQuantizer) -> None:
    """Set every Phi conv to the identity kernel, so Phi(h) = h while still running the conv path."""
    for m in q.modules():
        if isinstance(m, Phi):
            m.weight.data.zero_()
            centre = (1,) * m.spatial_dims
            for c in range(m.weight.shape[0]):
                m.weight.data[(c, c) + centre] = 1.0
            m.bias.data.zero_()


@pytest.mark.parametrize("spatial_dims,scales,size", [(2, [1, 2, 3, 4], (4, 4)), (1, [1, 2, 4, 8], (8,))])
def test_shapes_and_consistency_1d_2d(spatial_dims, scales, size):
    q = MultiScaleResidualQuantizer(32, 6, scales, spatial_dims=spatial_dims).eval()
    f = torch.randn(2, 6, *size)
    out = q(f)
    assert isinstance(out, QuantizerOutput) and out.quantized.shape == f.shape
    n = [s**spatial_dims for s in scales]
    assert [tuple(i.shape) for i in out.indices] == [(2, k) for k in n]
    idx = q.encode(f)
    assert all(torch.equal(a, b) for a, b in zip(idx, out.indices))
    fhats = q.encode_fhat(f)
    decoded = q.indices_to_fhat(idx)
    assert len(fhats) == len(decoded) == len(scales)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fhats, decoded))
    assert torch.allclose(q.decode(idx), out.quantized, atol=1e-5)
    var_in = q.idx_to_var_input(idx)
    assert var_in.shape == (2, sum(n[1:]), 6)
    # each teacher-forcing block is the cumulative f_hat area-pooled to the next scale
    start = 0
    for s in range(len(scales) - 1):
        pooled = F.interpolate(fhats[s], size=(scales[s + 1],) * spatial_dims, mode="area")
        block = var_in[:, start:start + n[s + 1]]
        assert torch.allclose(block, pooled.reshape(2, 6, -1).transpose(1, 2), atol=1e-6)
        start += n[s + 1]
    # sampling path: next_autoregressive_input rebuilds the same f_hat and the same next inputs
    f_hat = torch.zeros(2, 6, *size)
    for s in range(len(scales)):
        f_hat, nxt = q.next_autoregressive_input(s, f_hat, q.embed_scale(idx[s], s))
        assert torch.allclose(f_hat, fhats[s], atol=1e-6)
    assert torch.equal(nxt, f_hat)
    phi_weight = q.state_dict()["quant_resi.qresi_ls.0.weight"]
    assert phi_weight.shape == (6, 6) + (3,) * spatial_dims


def test_hand_computed_two_scale_case():
    # codebook on a line; quant_resi=0 makes Phi the identity (VAR builds nn.Identity there)
    codes = torch.tensor([[0.0], [1.0], [3.0], [-0.5]])
    q = MultiScaleResidualQuantizer(4, 1, [1, 2], spatial_dims=2, quant_resi=0.0, beta=0.25).eval()
    assert not any(k.startswith("quant_resi") for k in q.state_dict())
    q.embedding.weight.data.copy_(codes)
    f = torch.tensor([[[[3.2, 2.6], [0.9, 4.1]]]])  # mean 2.7 -> code 3.0
    out = q(f)
    assert out.indices[0].tolist() == [[2]]
    # residual after the constant 3.0 map: [[0.2,-0.4],[-2.1,1.1]] -> codes 0, -0.5, -0.5(nearest to -2.1), 1
    assert out.indices[1].tolist() == [[0, 3, 3, 1]]
    fhat0 = torch.full_like(f, 3.0)
    fhat1 = fhat0 + torch.tensor([[[[0.0, -0.5], [-0.5, 1.0]]]])
    assert torch.allclose(out.quantized, fhat1, atol=1e-6)
    expected = sum(1.25 * F.mse_loss(h, f) for h in (fhat0, fhat1)) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_phi_formula_and_partial_sharing_rule():
    phi = Phi(2, 0.5, spatial_dims=2)
    phi.weight.data.zero_()
    phi.bias.data.copy_(torch.tensor([1.0, -2.0]))
    h = torch.randn(1, 2, 3, 3)
    assert torch.allclose(phi(h), 0.5 * h + 0.5 * torch.tensor([1.0, -2.0]).view(1, 2, 1, 1))
    # released VAR: 10 scales, 4 partially shared convs at ticks linspace(1/12, 11/12, 4) = 1/12, 13/36, 23/36, 11/12
    # nearest to s/9; s=2 and s=7 are exact ties in real arithmetic, which float64 resolves to 1 and 3
    q = MultiScaleResidualQuantizer(8, 2, [1, 2, 3, 4, 5, 6, 8, 10, 13, 16])
    chosen = [list(q.quant_resi.qresi_ls).index(q.quant_resi.for_scale(s, 10)) for s in range(10)]
    assert chosen == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    # the var_msrq fixture's 7 scales (its tie at s=3 goes to conv 2; the parity test checks it numerically)
    chosen7 = [list(q.quant_resi.qresi_ls).index(q.quant_resi.for_scale(s, 7)) for s in range(7)]
    assert chosen7 == [0, 0, 1, 2, 2, 3, 3]
    shared = MultiScaleResidualQuantizer(8, 2, [1, 2, 4], share_quant_resi=1)
    assert {k for k in shared.state_dict() if "quant_resi" in k} == {"quant_resi.qresi.weight", "quant_resi.qresi.bias"}
    assert shared.quant_resi.for_scale(0, 3) is shared.quant_resi.for_scale(2, 3)
    own = MultiScaleResidualQuantizer(8, 2, [1, 2, 4], share_quant_resi=0)
    assert len({id(own.quant_resi.for_scale(s, 3)) for s in range(3)}) == 3
    assert "quant_resi.2.weight" in own.state_dict()


def test_official_key_names():
    q = MultiScaleResidualQuantizer(64, 8, [1, 2, 3, 4, 5, 6, 8])
    expected = {"embedding.weight", "ema_vocab_hit_SV"} | {
        f"quant_resi.qresi_ls.{i}.{p}" for i in range(4) for p in ("weight", "bias")
    }
    assert set(q.state_dict()) == expected
    assert q.state_dict()["ema_vocab_hit_SV"].shape == (7, 64)


def test_straight_through_and_gradients_reach_codebook_and_phi():
    q = MultiScaleResidualQuantizer(16, 4, [1, 2, 4], spatial_dims=2).train()
    f = torch.randn(2, 4, 4, 4, requires_grad=True)
    out = q(f)
    upstream = torch.randn_like(f)
    (out.quantized * upstream).sum().backward(retain_graph=True)
    assert torch.allclose(f.grad, upstream)
    f.grad = None
    out.loss.backward()
    assert q.embedding.weight.grad.abs().sum() > 0
    assert q.quant_resi.qresi_ls[0].weight.grad.abs().sum() > 0
    assert f.grad.abs().sum() > 0  # commitment term


def test_usage_buffer_tracks_hits_in_training_only():
    q = MultiScaleResidualQuantizer(16, 4, [1, 2, 4], spatial_dims=1).eval()
    f = torch.randn(3, 4, 4)
    q(f)
    assert q.ema_vocab_hit_SV.abs().sum() == 0
    out = q.train()(f)
    for s, idx in enumerate(out.indices):
        assert torch.equal(q.ema_vocab_hit_SV[s], torch.bincount(idx.flatten(), minlength=16).float())
    first = q.ema_vocab_hit_SV.clone()
    out2 = q(torch.randn(3, 4, 4))  # records 2..100 use momentum 0.9
    for s, idx in enumerate(out2.indices):
        hit = torch.bincount(idx.flatten(), minlength=16).float()
        assert torch.allclose(q.ema_vocab_hit_SV[s], 0.9 * first[s] + 0.1 * hit)
    used = torch.cat([i.flatten() for i in out.indices]).unique().numel()
    assert out.metrics["usage"].item() == pytest.approx(used / 16)


@pytest.mark.parametrize("spatial_dims", [2, 1])
def test_reconstruction_error_decreases_with_scales_on_a_real_image(shared_data, spatial_dims):
    img = real_image(shared_data)
    # 2D: the 32x32 photo; 1D: 8 of its rows as [B=8, 3, 32] sequences
    f = img if spatial_dims == 2 else img[0, :, ::4, :].permute(1, 0, 2).contiguous()
    cb = grid_codebook()
    q = MultiScaleResidualQuantizer(cb.shape[0], 3, [1, 2, 4, 8, 16, 32], spatial_dims=spatial_dims).eval()
    q.embedding.weight.data.copy_(cb)
    identity_phis(q)
    errors = [F.mse_loss(h, f).item() for h in q.encode_fhat(f)]
    assert errors[0] < f.square().mean().item()
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.02 * errors[0]


def test_errors_and_round_trip_through_hub(tmp_path):
    q = MultiScaleResidualQuantizer(16, 4, [1, 2, 4], spatial_dims=2)
    with pytest.raises(ValueError, match="larger than"):
        q(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match=r"\[B, 4, H, W\]"):
        q(torch.randn(1, 4, 4))
    with pytest.raises(ValueError, match="tokens per sample"):
        q.indices_to_fhat([torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)])
    with pytest.raises(ValueError, match="spatial_dims"):
        MultiScaleResidualQuantizer(16, 4, [1, 2], spatial_dims=3)
    back = from_pretrained(save_pretrained(q, tmp_path / "msrq"))
    f = torch.randn(2, 4, 4, 4)
    assert all(torch.equal(a, b) for a, b in zip(back.encode(f), q.encode(f)))
