"""VAT's encoder peer: 3DShape2VecSet parity through the hub, the loader's checkpoint forms, FPS and KL by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tokenforge.hub import CheckpointError, from_official
from tokenforge.parity import check, parity_sources
from tokenforge.tokenizers.vat.layers import DiagonalGaussian, PointEmbed, farthest_point_sample


def test_shape2vecset_fixture_all_outputs_ok(fixtures_dir):
    assert parity_sources()["shape2vecset"] == "tokenforge.tokenizers.vat.official"
    lines = check(fixtures_dir / "shape2vecset")
    assert len(lines) >= 10
    for line in lines:
        assert line.status == "ok", str(line)


def test_loader_reads_training_checkpoint_dict(fixtures_dir, tmp_path):
    folder = fixtures_dir / "shape2vecset"
    state = load_file(str(folder / "state_dict.safetensors"))
    torch.save({"model": state, "epoch": 3}, tmp_path / "checkpoint-3.pth")
    config = json.loads((folder / "config.json").read_text())
    model = from_official("shape2vecset", tmp_path / "checkpoint-3.pth", config)
    ref = from_official("shape2vecset", folder)
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k
    bad = dict(state)
    bad.pop("to_outputs.bias")
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="to_outputs.bias"):
        from_official("shape2vecset", tmp_path / "bad.pth", config)


def test_fps_by_hand():
    pts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.1, 0, 0], [0, 2, 0], [0.5, 0.5, 0]]])
    # start 0; farthest from 0 is (0,2,0)=3; then min-dist: 1 -> min(1, 5)=1, 2 -> .01, 4 -> min(.5, 2.5)=.5 => 1
    assert farthest_point_sample(pts, 3).tolist() == [[0, 3, 1]]
    with pytest.raises(ValueError, match="cannot pick"):
        farthest_point_sample(pts, 6)


def test_point_embed_features_and_gaussian_kl():
    emb = PointEmbed(dim=4, hidden_dim=12)
    assert emb.basis.shape == (3, 6)
    assert torch.allclose(emb.basis[0, :2], torch.tensor([math.pi, 2 * math.pi]))
    with torch.no_grad():
        emb.mlp.weight.zero_()
        emb.mlp.bias.zero_()
        emb.mlp.weight[0, 0] = 1.0  # sin(pi * x)
        emb.mlp.weight[1, 6] = 1.0  # cos(pi * x)
        emb.mlp.weight[2, 12] = 1.0  # raw x
    out = emb(torch.tensor([[[0.5, 0.0, 0.0]]]))
    assert torch.allclose(out[0, 0, :3], torch.tensor([1.0, 0.0, 0.5]), atol=1e-6)
    with pytest.raises(ValueError, match="xyz"):
        emb(torch.zeros(1, 4, 6))
    g = DiagonalGaussian(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 50.0]]]))
    assert g.logvar[0, 0, 1] == 20.0  # clamped
    expected = 0.5 * ((1 + 1 - 1 - 0) + (0 + math.exp(20) - 1 - 20)) / 2
    assert torch.allclose(g.kl(), torch.tensor([expected]), rtol=1e-5)
