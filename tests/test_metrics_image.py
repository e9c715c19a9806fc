"""Image metrics: PSNR by hand, SSIM against torchmetrics' independent implementation, Fréchet distance by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokenforge.metrics.image import frechet_distance, mean_std, psnr, ssim, to_uint8
from tokenforge.reconstruct import psnr as reconstruct_psnr


def real_images(shared_data: Path, count: int = 2, size: int = 48) -> torch.Tensor:
    paths = sorted((shared_data / "images" / "faces").glob("*.png"))[:count]
    out = []
    for path in paths:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB").resize((size, size)), dtype=np.float32)
        out.append(torch.from_numpy(array / 127.5 - 1).permute(2, 0, 1))
    return torch.stack(out)


def test_psnr_matches_a_hand_computation(shared_data: Path) -> None:
    x = real_images(shared_data)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    a, b = to_uint8(noisy[0]).astype(float), to_uint8(x[0]).astype(float)
    expected = 10 * math.log10(255**2 / ((a - b) ** 2).mean())
    values = psnr(noisy, x)
    assert len(values) == 2 and values[0] == pytest.approx(expected, abs=1e-9)
    assert 15 < values[0] < 30  # sigma 0.1 in [-1, 1] = 12.75 levels -> ~26 dB before clamping
    assert psnr(x[0], x[0]) == math.inf
    assert reconstruct_psnr is psnr  # reconstruct.py uses this one
    # one level of difference everywhere: MSE 1 -> 20 log10(255)
    level = torch.full((3, 8, 8), 100.0)
    assert psnr(level / 127.5 - 1, (level + 1) / 127.5 - 1) == pytest.approx(20 * math.log10(255), abs=1e-9)


def test_ssim_matches_torchmetrics_and_orders_degradations(shared_data: Path) -> None:
    from torchmetrics.functional.image import structural_similarity_index_measure

    x = real_images(shared_data)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    ours = ssim(noisy, x)
    q = lambda t: torch.from_numpy(np.stack([to_uint8(i) for i in t])).permute(0, 3, 1, 2).double()  # noqa: E731
    for i in range(2):
        ref = float(structural_similarity_index_measure(q(noisy[i:i + 1]), q(x[i:i + 1]), data_range=255.0,
                                                        gaussian_kernel=True, sigma=1.5, kernel_size=11))
        assert ours[i] == pytest.approx(ref, abs=0.02), (ours, ref)  # borders are handled differently
    assert ssim(x[0], x[0]) == pytest.approx(1.0)
    milder = ssim((x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(-1, 1), x)
    assert all(m > o for m, o in zip(milder, ours)) and all(0 < o < 1 for o in ours)
    with pytest.raises(ValueError, match="one shape"):
        ssim(x, x[:, :, :20])


def test_frechet_distance_and_mean_std() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # a shift of the mean by d adds |d|^2; equal covariances cancel in the trace term
    assert frechet_distance(a, a + np.array([1.0, 2.0, 0.0])) == pytest.approx(5.0, abs=1e-6)
    # 1-D Gaussians: (m1-m2)^2 + (s1-s2)^2
    x, y = np.array([[0.0], [2.0]]), np.array([[0.0], [4.0]])  # sample std sqrt(2) and sqrt(8), means 1 and 2
    assert frechet_distance(x, y) == pytest.approx(1 + (math.sqrt(2) - math.sqrt(8)) ** 2, abs=1e-9)
    stats = mean_std([1.0, 3.0, math.inf])
    assert stats == {"mean": 2.0, "std": 1.0, "n": 2}
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(a, a[:, :2])
