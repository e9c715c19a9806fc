"""Image reconstruction / generation metrics: PSNR, SSIM, LPIPS, Fréchet distance (rFID / FID).

Images are float tensors in [-1, 1], ``[3, H, W]`` or ``[B, 3, H, W]``; estimate first, reference second.
- `psnr`: dB after 8-bit quantisation of both images (what a viewer of the PNGs sees), per image.
- `ssim`: scikit-image's SSIM on the 8-bit images with the settings of Wang et al. 2004 (Gaussian window,
  sigma 1.5, population covariance, data range 255), mean over the colour channels, per image.
- `lpips`: the LPIPS module of `tokenforge.tokenizers.losses.perceptual` from LOCAL weight files.
- `frechet_distance`: the FID formula on two feature sets; `fid` extracts Inception features with
  torchmetrics' ``FrechetInceptionDistance`` from a LOCAL weights file (``feature_extractor_weights_path``;
  that needs the ``torch-fidelity`` package). Nothing is ever downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def to_uint8(image: Tensor) -> np.ndarray:
    """``[3, H, W]`` in [-1, 1] -> ``[H, W, 3]`` uint8 (rounded, clamped)."""
    return ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def _batch(est: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    est, ref = torch.as_tensor(est), torch.as_tensor(ref)
    est, ref = (est[None] if est.ndim == 3 else est), (ref[None] if ref.ndim == 3 else ref)
    if est.ndim != 4 or est.shape != ref.shape:
        raise ValueError(f"images must be [B, C, H, W] (or [C, H, W]) of one shape; got {tuple(est.shape)} "
                         f"and {tuple(ref.shape)}")
    return est, ref


def psnr(est: Tensor, ref: Tensor) -> float | list[float]:
    """PSNR in dB of images in [-1, 1] after 8-bit quantisation; a float for one image, a list for a batch."""
    single = torch.as_tensor(est).ndim == 3
    est, ref = _batch(est, ref)
    out = []
    for e, r in zip(est, ref):
        mse = float(np.mean((to_uint8(e).astype(np.float64) - to_uint8(r).astype(np.float64)) ** 2))
        out.append(float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse))
    return out[0] if single else out


def ssim(est: Tensor, ref: Tensor) -> float | list[float]:
    """SSIM of the 8-bit images (Gaussian sigma 1.5 window, Wang et al. constants); float or list per image."""
    from skimage.metrics import structural_similarity

    single = torch.as_tensor(est).ndim == 3
    est, ref = _batch(est, ref)
    if min(est.shape[-2:]) < 7:
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got {tuple(est.shape[-2:])}")
    out = [float(structural_similarity(to_uint8(r), to_uint8(e), data_range=255, channel_axis=2,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))
           for e, r in zip(est, ref)]
    return out[0] if single else out


class LPIPSMetric:
    """LPIPS distances per image from local weight files (``vgg_weights`` and optionally ``lin_weights``)."""

    def __init__(self, vgg_weights: str | Path, lin_weights: str | Path | None = None, device: str = "cpu") -> None:
        from tokenforge.tokenizers.losses.perceptual import LPIPS

        for path in (vgg_weights, lin_weights):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"LPIPS weights {path} do not exist (give local files; nothing is downloaded)")
        self.net = LPIPS(str(vgg_weights), None if lin_weights is None else str(lin_weights)).to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, est: Tensor, ref: Tensor) -> list[float]:
        est, ref = _batch(est, ref)
        value = self.net(est.float().to(self.device), ref.float().to(self.device))
        return [float(v) for v in value.reshape(len(est), -1).mean(1)]


def frechet_distance(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two ``[N, D]`` feature sets (N >= 2 each)."""
    from scipy import linalg

    a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, Tensor) else b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two [N>=2, D] feature sets of one D, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s_a, s_b = np.atleast_2d(s_a), np.atleast_2d(s_b)
    covmean = np.asarray(linalg.sqrtm(s_a @ s_b))
    if not np.isfinite(covmean).all():  # near-singular product: regularise as pytorch-fid does
        eps = np.eye(len(s_a)) * 1e-6
        covmean = np.asarray(linalg.sqrtm((s_a + eps) @ (s_b + eps)))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


class FIDMetric:
    """FID between accumulated real and fake images with Inception weights from a local file.

    Uses torchmetrics' ``FrechetInceptionDistance(feature_extractor_weights_path=...)``; raises ImportError
    with what to install when ``torch-fidelity`` is missing, FileNotFoundError when the file is missing.
    """

    def __init__(self, weights: str | Path, device: str = "cpu") -> None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"Inception weights {weights} do not exist (give a local file; nothing is downloaded)")
        try:
            import torch_fidelity  # noqa: F401
        except ImportError as error:
            raise ImportError("FID needs the torch-fidelity package (pip install torch-fidelity)") from error
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.metric = FrechetInceptionDistance(feature_extractor_weights_path=str(weights), normalize=True).to(device)
        self.device = device

    def update(self, images: Tensor, real: bool) -> None:
        self.metric.update(((images.float().clamp(-1, 1) + 1) / 2).to(self.device), real=real)

    def compute(self) -> float:
        return float(self.metric.compute())


def mean_std(values: list[float]) -> dict[str, float | int | None]:
    """``{"mean", "std", "n"}`` over the finite values (population std)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite)), "n": len(finite)}
