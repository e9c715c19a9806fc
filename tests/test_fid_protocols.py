"""Named FID protocols: the registry, the Fréchet formula (closed forms, both computation routes), reference
statistics files (pytorch-fid / ADM ``.npz``), input rules (TF1 bilinear by hand, antialiasing) and what a result
records. A tiny stand-in feature network keeps these tests fast; test_metric_parity.py runs the real Inception."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tokenforge.metrics.fid_protocols import (PROTOCOLS, frechet_from_features, frechet_from_statistics,
                                              load_statistics, protocol, save_statistics, statistics, to_pixels)
from tokenforge.metrics.inception_input import INPUTS, antialias_input, resize_tf1_bilinear, tf1_input
from tokenforge.metrics.weights import WeightsUnavailable


class PooledColours(nn.Module):
    """Stand-in for the Inception: 8 fixed random 1x1 filters on the 299x299 input, ReLU, global mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(8, 3, 1, 1, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pool": torch.relu(self.conv(x)).mean(dim=(2, 3))}


def test_registry_names_every_protocol_and_rejects_others() -> None:
    assert {"pytorch-fid", "torch-fidelity", "torchmetrics", "torchmetrics-antialias", "clean-fid",
            "adm"} <= set(PROTOCOLS)
    for name, p in PROTOCOLS.items():
        record = p.describe()
        assert record["protocol"] == name and record["input"] in INPUTS and len(record["weights_sha256"]) == 64
        assert record["samples"] == 50_000
    assert protocol("adm").reference is not None and protocol("adm").reference.file.endswith(".npz")
    with pytest.raises(ValueError, match="unknown FID protocol 'fid'; choose one of pytorch-fid"):
        protocol("fid")


def test_frechet_closed_forms_and_both_routes_agree() -> None:
    # diagonal Gaussians: FID = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_from_statistics(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-9)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 40)), rng.normal(0.5, 2.0, size=(9, 40))  # fewer images than dimensions
    small = frechet_from_features(x, y)  # the N x N route
    assert small == pytest.approx(frechet_from_statistics(*statistics(x), *statistics(y)), rel=1e-7)
    x, y = rng.normal(size=(60, 5)), rng.normal(0.5, 2.0, size=(70, 5))  # the statistics route
    assert frechet_from_features(x, y) == pytest.approx(frechet_from_statistics(*statistics(x), *statistics(y)))
    assert frechet_from_features(x, x) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="two \\[N>=2, D\\] feature sets"):
        frechet_from_features(x[:1], y)


def test_statistics_files_pytorch_fid_adm_and_activations(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(50, 4))
    save_statistics(tmp_path / "ref.npz", features)
    loaded = load_statistics(tmp_path / "ref.npz")
    assert np.allclose(loaded["mu"], features.mean(0)) and np.allclose(loaded["sigma"], np.cov(features, rowvar=False))
    assert len(loaded["sha256"]) == 64 and loaded["file"].endswith("ref.npz")
    # an ADM reference batch carries arr_0 (the images) beside mu / sigma / mu_s / sigma_s
    np.savez(tmp_path / "adm.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=loaded["mu"], sigma=loaded["sigma"],
             mu_s=np.zeros(3), sigma_s=np.eye(3))
    assert np.array_equal(load_statistics(tmp_path / "adm.npz")["sigma"], loaded["sigma"])
    np.savez(tmp_path / "acts.npz", activations=features)
    acts = load_statistics(tmp_path / "acts.npz")
    assert acts["n"] == 50 and np.allclose(acts["mu"], loaded["mu"])
    np.savez(tmp_path / "samples.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="must be featurised first"):
        load_statistics(tmp_path / "samples.npz")


def test_tf1_bilinear_by_hand_and_antialiasing() -> None:
    x = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    out = resize_tf1_bilinear(x, 4)  # output i reads i * 2 / 4; the last rows/columns clamp to the edge
    assert torch.equal(out[0, 0], torch.tensor([[0.0, 5.0, 10.0, 10.0], [10.0, 15.0, 20.0, 20.0],
                                                [20.0, 25.0, 30.0, 30.0], [20.0, 25.0, 30.0, 30.0]]))
    big = torch.rand(1, 3, 600, 600, generator=torch.Generator().manual_seed(0)) * 255
    plain, smooth = tf1_input(big), antialias_input(big)
    assert plain.shape == smooth.shape == (1, 3, 299, 299)
    assert smooth.std() < 0.6 * plain.std()  # antialiasing averages noise away when downsampling 2x
    try:
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    except ImportError:
        return
    odd = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(1)) * 255
    theirs = interpolate_bilinear_2d_like_tensorflow1x(odd, size=(299, 299), align_corners=False)
    assert torch.allclose(resize_tf1_bilinear(odd), theirs, atol=1e-4)


def test_pixels_round_or_floor() -> None:
    x = torch.tensor([-1.0, 1.0, 0.001, -0.999]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert to_pixels(x)[0, 0, 0].tolist() == [0.0, 255.0, 128.0, 0.0]
    assert to_pixels(x, "floor")[0, 0, 0].tolist() == [0.0, 255.0, 127.0, 0.0]
    assert to_pixels(torch.full((3, 2, 2), 7, dtype=torch.uint8)).shape == (1, 3, 2, 2)
    with pytest.raises(ValueError, match="\\[B, 3, H, W\\]"):
        to_pixels(torch.zeros(1, 1, 4, 4))


def test_accumulator_records_protocol_and_compares_with_stored_statistics(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(6, 3, 16, 16, generator=gen) * 2 - 1
    fake = (torch.rand(5, 3, 16, 16, generator=gen) * 2 - 1) * 0.5 + 0.3
    net = PooledColours()
    p = protocol("pytorch-fid")
    acc = p.accumulator(network=net, batch_size=4)
    acc.update(real[:3], real=True)
    acc.update(real[3:], real=True)
    acc.update(fake, real=False)
    result = acc.compute()
    assert result["protocol"] == "pytorch-fid" and result["n_real"] == 6 and result["n_fake"] == 5
    assert result["weights_sha256"] is None and result["reference"] == "real images given"
    assert "fewer than the protocol's 50000" in result["note"]
    assert result["fid"] > 1e-3
    assert p.fid(real, real, network=net)["fid"] == pytest.approx(0.0, abs=1e-9)
    # the same FID against the real images' statistics stored as pytorch-fid / ADM store them
    save_statistics(tmp_path / "real.npz", acc.features(real))
    stored = p.accumulator(network=net, reference=tmp_path / "real.npz")
    stored.update(fake, real=False)
    again = stored.compute()
    assert again["fid"] == pytest.approx(result["fid"], rel=1e-9)
    assert again["reference_sha256"] == load_statistics(tmp_path / "real.npz")["sha256"]
    # ADM's own reference batch is looked up under $TOKENFORGE_HOME/weights/ and reported when missing
    monkeypatch.setenv("TOKENFORGE_HOME", str(tmp_path / "home"))
    with pytest.raises(WeightsUnavailable, match="unavailable: put VIRTUAL_imagenet256_labeled.npz \\(any sha256\\)"):
        protocol("adm").accumulator(network=net, reference=True)
    assert math.isfinite(result["fid"])


def test_inception_score_and_precision_recall_in_the_record() -> None:
    from tokenforge.metrics.fid_protocols import inception_score

    class WithLogits(PooledColours):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            pool = super().forward(x)["pool"]
            return {"pool": pool, "logits_unbiased": pool @ torch.linspace(-2, 2, 8 * 5).view(8, 5)}

    gen = torch.Generator().manual_seed(2)
    acc = protocol("torch-fidelity").accumulator(network=WithLogits())
    acc.update(torch.rand(12, 3, 8, 8, generator=gen) * 2 - 1, real=True)
    acc.update(torch.rand(10, 3, 8, 8, generator=gen) * 2 - 1, real=False)
    record = acc.compute(precision_recall=True)
    assert record["inception_score"]["splits"] == 10 and record["inception_score"]["mean"] >= 1.0
    assert 0 <= record["precision"] <= 1 and 0 <= record["recall"] <= 1
    # identical confident predictions: p(y|x) = p(y), IS = 1; one class per split each different: IS = classes
    assert inception_score(np.zeros((10, 4)))["mean"] == pytest.approx(1.0)
    assert inception_score(np.tile(np.eye(2) * 50, (10, 1)), splits=10, shuffle=False)["mean"] == pytest.approx(2.0)


def test_inception_loads_a_published_style_file(tmp_path: Path) -> None:
    from tokenforge.metrics.inception import FIDInception

    state = {k: v for k, v in FIDInception.random(seed=1).state_dict().items()
             if not k.endswith("num_batches_tracked")}  # as in files saved by older torch versions
    torch.save(state, tmp_path / "inception.pth")
    loaded = FIDInception.load(tmp_path / "inception.pth")
    assert torch.equal(loaded.fc.weight, state["fc.weight"])
    assert torch.equal(loaded.Mixed_7c.branch_pool.bn.running_mean, state["Mixed_7c.branch_pool.bn.running_mean"])
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
