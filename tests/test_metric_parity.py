"""Our metrics against the reference packages, with the same random weights in both (nothing is downloaded).

- FID: one seeded random-weight `FIDInception` is copied into pytorch-fid's ``InceptionV3`` and into
  torch-fidelity's extractor (and torchmetrics' wrapper of it); on the same bundled photos our pool features
  equal theirs and our FID equals each package's own statistics + Fréchet code to 1e-6 relative. The packages'
  Fréchet code (``scipy.linalg.sqrtm``) takes minutes on a 2048x2048 matrix on a CI CPU, so the FID values are
  compared on the first 128 pool features of every network (the features themselves are compared in full).
- clean-fid: its resize (PIL bicubic on float channels) and its Fréchet code against ours.
- LPIPS: the ``lpips`` package's VGG LPIPS with random trunk and heads (``pretrained=False, pnet_rand=True``),
  its state saved to a file and loaded by our LPIPS.
- SSIM: the reference value equals scikit-image's Gaussian SSIM (data range 1 on [0, 1]); the LlamaGen value
  equals scikit-image with LlamaGen's call and is clearly higher.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from tokenforge.metrics.fid_protocols import frechet_from_features, protocol
from tokenforge.metrics.inception import FIDInception

pytest.importorskip("pytorch_fid")
pytest.importorskip("torch_fidelity")

SAMPLES = Path(__file__).resolve().parents[1] / "tokenforge" / "samples" / "images"
PHOTOS = ("chelsea.png", "china.jpg", "brick.png", "rocket.jpg", "flower.jpg", "grace_hopper.jpg")
DIMS = 128  # columns of the pool features the reference Fréchet codes see (sqrtm at 2048-d: minutes on a CPU)


def _photos(size: int = 48) -> torch.Tensor:
    """Six bundled photos as uint8 ``[6, 3, size, size]`` (centre-cropped squares)."""
    out = []
    for name in PHOTOS:
        image = Image.open(SAMPLES / name).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    return torch.stack(out)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    net = FIDInception.random(seed=3)
    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save(net.state_dict(), path)
    images = _photos()
    return {"net": net, "path": path, "real": images[:2], "fake": images[3:5], "features": {}}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _ours(setup: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Our pool features of the real and fake photos under a protocol (computed once per input rule)."""
    rule = protocol(name).input_rule
    if rule not in setup["features"]:
        acc = protocol(name).accumulator(network=setup["net"])
        setup["features"][rule] = acc.features(setup["real"]), acc.features(setup["fake"])
    return setup["features"][rule]


@pytest.mark.slow  # Inception forwards at 299x299 on a CPU
def test_fid_equals_pytorch_fid(setup: dict) -> None:
    import pytorch_fid.inception as pfi
    from pytorch_fid.fid_score import calculate_frechet_distance

    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: setup["net"].state_dict()):
        reference = pfi.InceptionV3([3]).eval()  # the FID Inception with our random weights copied in
    with torch.no_grad():
        theirs = [reference(images.float() / 255)[0].flatten(1).numpy() for images in (setup["real"], setup["fake"])]
    ours = _ours(setup, "pytorch-fid")
    for a, b in zip(ours, theirs):
        assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max()
        assert a.std(0).mean() > 1e-3  # the random network still tells the photos apart
    r, f = (x[:, :DIMS].astype(np.float64) for x in theirs)
    expected = calculate_frechet_distance(np.mean(f, 0), np.cov(f, rowvar=False), np.mean(r, 0),
                                          np.cov(r, rowvar=False))
    assert expected > 1e-3
    assert _rel(frechet_from_features(ours[1][:, :DIMS], ours[0][:, :DIMS]), expected) < 1e-6


@pytest.mark.slow  # Inception forwards at 299x299 on a CPU
def test_fid_equals_torch_fidelity_and_torchmetrics_features(setup: dict) -> None:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                            feature_extractor_weights_path=str(setup["path"]))
    with torch.no_grad():
        theirs = [extractor(images)[0].numpy() for images in (setup["real"], setup["fake"])]
    ours = _ours(setup, "torch-fidelity")
    for a, b in zip(ours, theirs):
        assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max()
    stats = [fid_features_to_statistics(torch.from_numpy(x[:, :DIMS]).double()) for x in theirs]
    expected = fid_statistics_to_metric(stats[0], stats[1], verbose=False)["frechet_inception_distance"]
    assert _rel(frechet_from_features(ours[0][:, :DIMS], ours[1][:, :DIMS]), expected) < 1e-6
    # ADM's evaluator and torchmetrics(antialias=False) resize as TF1 does: the same input rule
    assert protocol("adm").input_rule == protocol("torchmetrics").input_rule == protocol("torch-fidelity").input_rule


@pytest.mark.slow  # Inception forwards at 299x299 on a CPU
def test_torchmetrics_extractor_with_and_without_antialias(setup: dict) -> None:
    from torchmetrics.image.fid import NoTrainInceptionV3

    one = setup["real"][:1]
    for name, antialias in (("torchmetrics", False), ("torchmetrics-antialias", True)):
        wrapped = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(setup["path"]), antialias=antialias)
        with torch.no_grad():
            theirs = wrapped(one).numpy()
        ours = _ours(setup, "torchmetrics")[0][:1] if not antialias else \
            protocol(name).accumulator(network=setup["net"]).features(one)
        assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max(), name
    assert np.abs(ours - _ours(setup, "torchmetrics")[0][:1]).max() > 1e-4  # antialiasing changes the features


def test_clean_fid_resize_and_frechet() -> None:
    pytest.importorskip("cleanfid")
    from cleanfid.fid import frechet_distance as clean_frechet
    from cleanfid.resize import build_resizer

    from tokenforge.metrics.inception_input import resize_pil_bicubic

    images = _photos(40)
    theirs = np.stack([build_resizer("clean")(image.permute(1, 2, 0).numpy()) for image in images])
    ours = resize_pil_bicubic(images.float()).permute(0, 2, 3, 1).numpy()
    assert ours.shape == (6, 299, 299, 3) and np.array_equal(ours, theirs)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 16)), rng.normal(0.3, 1.2, size=(30, 16))
    expected = clean_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert _rel(frechet_from_features(a, b), expected) < 1e-6


def test_lpips_equals_lpips_package(tmp_path: Path) -> None:
    lpips = pytest.importorskip("lpips")
    from tokenforge.metrics.image import LPIPSMetric

    torch.manual_seed(0)
    reference = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False).eval()
    with torch.no_grad():  # the heads start as plain convs; make them non-negative as trained heads are
        for k in range(5):
            getattr(reference, f"lin{k}").model[1].weight.abs_()
    torch.save(reference.state_dict(), tmp_path / "lpips_random.pth")
    ours = LPIPSMetric(tmp_path / "lpips_random.pth")
    x = _photos(64).float() / 127.5 - 1
    y = x.roll(1, dims=0)
    with torch.no_grad():
        expected = reference(x, y).flatten().tolist()
    got = ours(x, y)
    assert min(expected) > 0
    assert got == pytest.approx(expected, rel=1e-5)
    assert ours.record()["trunk"]["published"] is False  # a random trunk is not the published file


def test_ssim_reference_and_llamagen_variants() -> None:
    from skimage.metrics import structural_similarity

    from tokenforge.metrics.image import ssim, ssim_data_range_2, to_uint8

    ref = _photos(48).float() / 127.5 - 1
    est = (ref + 0.15 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    reference = ssim(est, ref)
    llamagen = ssim_data_range_2(est, ref)
    for i in range(len(ref)):
        e01, r01 = to_uint8(est[i]) / 255.0, to_uint8(ref[i]) / 255.0
        expected = structural_similarity(r01, e01, data_range=1.0, channel_axis=2, gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False)
        assert reference[i] == pytest.approx(expected, abs=1e-9)
        truth = ((ref[i] + 1) / 2).permute(1, 2, 0).numpy().astype(np.float64)
        assert llamagen[i] == pytest.approx(structural_similarity(e01, truth, data_range=2.0, channel_axis=2),
                                            abs=1e-9)
        assert llamagen[i] > reference[i] + 0.02  # data_range 2 on [0, 1] images inflates SSIM


def test_inception_score_and_precision_recall_equal_torch_fidelity() -> None:
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    from tokenforge.metrics.fid_protocols import inception_score, precision_recall_of

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 1008, generator=gen) * 3
    expected = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    ours = inception_score(logits.numpy())
    assert _rel(ours["mean"], expected["inception_score_mean"]) < 1e-9
    assert _rel(ours["std"], expected["inception_score_std"]) < 1e-9
    unshuffled = isc_features_to_metric(logits, splits=10, shuffle=False)["inception_score_mean"]
    assert _rel(inception_score(logits.numpy(), shuffle=False)["mean"], unshuffled) < 1e-9
    real = torch.randn(60, 32, generator=gen)
    fake = torch.randn(50, 32, generator=gen) * 1.3 + 0.4
    precision, recall = calculate_precision_recall_full(fake, real, neighborhood=3, batch_size=16)  # (fake, real)
    got = precision_recall_of(real.numpy(), fake.numpy(), k=3, chunk=16)
    assert got == {"precision": pytest.approx(precision, abs=1e-6), "recall": pytest.approx(recall, abs=1e-6)}
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1
