"""Image reconstruction / generation metrics: PSNR, SSIM, LPIPS, Fréchet distance (rFID / FID).

Images are float tensors in [-1, 1], ``[3, H, W]`` or ``[B, 3, H, W]``; estimate first, reference second.
- `psnr`: dB after 8-bit quantisation of both images (what a viewer of the PNGs sees), per image.
- `ssim`: two labelled variants. ``variant="reference"`` (default): scikit-image's SSIM on the 8-bit images
  with the settings of Wang et al. 2004 (Gaussian window, sigma 1.5, population covariance, data range 1 on
  [0, 1]), the value scikit-image reports. ``variant="data_range_2"`` (`ssim_data_range_2`): as
  LlamaGen's ``reconstruction_vq_ddp.py`` computes it (scikit-image defaults, a 7x7 uniform window, and
  ``data_range=2.0`` on [0, 1] images, LlamaGen #72): higher than the reference value, never compare the two.
- `LPIPSMetric`: the LPIPS module of `tokenforge.tokenizers.losses.perceptual` from LOCAL weight files; without
  paths the published files are found under ``$TOKENFORGE_HOME/weights/`` and sha256-checked.
- `frechet_distance`: the FID formula on two feature sets; `FIDMetric` is FID under a named protocol of
  `tokenforge.metrics.fid_protocols` (pytorch-fid by default) from a checked local Inception file.
  Nothing is ever downloaded.
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


SSIM_VARIANTS = ("reference", "data_range_2")  # the second: LlamaGen's evaluation call (module docstring)


def ssim(est: Tensor, ref: Tensor, variant: str = "reference") -> float | list[float]:
    """SSIM per image (float for one, list for a batch). ``reference``: 8-bit images, Gaussian sigma 1.5 window,
    Wang et al. constants, data range 1 on [0, 1]. ``data_range_2``: LlamaGen's call (module docstring)."""
    from skimage.metrics import structural_similarity

    if variant not in SSIM_VARIANTS:
        raise ValueError(f"unknown SSIM variant {variant!r}; choose one of {', '.join(SSIM_VARIANTS)}")
    single = torch.as_tensor(est).ndim == 3
    est, ref = _batch(est, ref)
    if min(est.shape[-2:]) < 7:
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got {tuple(est.shape[-2:])}")
    out = []
    for e, r in zip(est, ref):
        restored = to_uint8(e).astype(np.float64) / 255
        if variant == "reference":
            value = structural_similarity(to_uint8(r).astype(np.float64) / 255, restored, data_range=1.0,
                                          channel_axis=2, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False)
        else:  # LlamaGen: restored PNG / 255 against the float ground truth, skimage defaults, data_range 2
            truth = ((r.detach().float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy().astype(np.float64)
            value = structural_similarity(restored, truth, data_range=2.0, channel_axis=2)
        out.append(float(value))
    return out[0] if single else out


def ssim_data_range_2(est: Tensor, ref: Tensor) -> float | list[float]:
    """SSIM as LlamaGen reports it (``data_range=2.0`` on [0, 1] images): `ssim` with ``variant="data_range_2"``."""
    return ssim(est, ref, variant="data_range_2")


class LPIPSMetric:
    """LPIPS distances per image from local weight files.

    ``vgg_weights`` / ``lin_weights`` given: those files are used as they are (a tokenizer may be scored with its
    own trunk) and `record` says whether their sha256 is the published one. Not given: torchvision's
    ``vgg16-397923af.pth`` and lpips' ``vgg.pth`` are located under ``$TOKENFORGE_HOME/weights/`` and checked,
    and a missing or different file raises `WeightsUnavailable` with the one-line "unavailable: put ..." message.
    """

    def __init__(self, vgg_weights: str | Path | None = None, lin_weights: str | Path | None = None,
                 device: str = "cpu") -> None:
        from tokenforge.metrics.weight_files import LPIPS_VGG16_TRUNK, LPIPS_VGG_HEADS
        from tokenforge.metrics.weights import locate
        from tokenforge.tokenizers.losses.perceptual import LPIPS

        for path in (vgg_weights, lin_weights):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"LPIPS weights {path} do not exist (give local files; nothing is downloaded)")
        if vgg_weights is None:
            vgg_weights = locate(LPIPS_VGG16_TRUNK)
            lin_weights = lin_weights or locate(LPIPS_VGG_HEADS)
        self.files = {"trunk": (Path(vgg_weights), LPIPS_VGG16_TRUNK),
                      "heads": (Path(lin_weights), LPIPS_VGG_HEADS) if lin_weights is not None else None}
        self.net = LPIPS(str(vgg_weights), None if lin_weights is None else str(lin_weights)).to(device).eval()
        self.device = device

    def record(self) -> dict[str, object]:
        """Files, sha256 and whether each is the published file (what a result records about its weights)."""
        from tokenforge.metrics.weights import sha256_of

        out: dict[str, object] = {"metric": "lpips-vgg v0.1"}
        for part, entry in self.files.items():
            if entry is not None:
                path, weight = entry
                digest = sha256_of(path)
                out[part] = {"file": str(path), "sha256": digest, "published": digest == weight.sha256}
        return out

    @torch.no_grad()
    def __call__(self, est: Tensor, ref: Tensor) -> list[float]:
        est, ref = _batch(est, ref)
        value = self.net(est.float().to(self.device), ref.float().to(self.device))
        return [float(v) for v in value.reshape(len(est), -1).mean(1)]


def frechet_distance(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two ``[N, D]`` feature sets (N >= 2 each)."""
    from tokenforge.metrics.fid_protocols import frechet_from_features

    a = a.detach().cpu().double().numpy() if isinstance(a, Tensor) else a
    b = b.detach().cpu().double().numpy() if isinstance(b, Tensor) else b
    return frechet_from_features(a, b)


class FIDMetric:
    """FID between accumulated real and fake images under a named protocol (`tokenforge.metrics.fid_protocols`).

    ``weights``: the Inception file (None: ``$TOKENFORGE_HOME/weights/pt_inception-2015-12-05-6726825d.pth``),
    sha256-checked; a missing or different file raises `WeightsUnavailable` ("unavailable: put ... at ...").
    `compute` gives the number, `result` the number with the protocol name and hashes.
    """

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", protocol: str = "pytorch-fid") -> None:
        from tokenforge.metrics.fid_protocols import protocol as named

        self.accumulator = named(protocol).accumulator(weights=weights, device=device)

    def update(self, images: Tensor, real: bool) -> None:
        self.accumulator.update(images, real=real)

    def result(self) -> dict[str, object]:
        return self.accumulator.compute()

    def compute(self) -> float:
        return float(self.result()["fid"])


def mean_std(values: list[float]) -> dict[str, float | int | None]:
    """``{"mean", "std", "n"}`` over the finite values (population std)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite)), "n": len(finite)}
