"""Named FID / rFID / gFID protocols: which network, which weights (sha256), which resize, which reference.

The same tokenizer gets FIDs points apart depending on the code that measured it (LlamaGen's VQ-16 rFID is
4.28, 2.19 or 2.11 by reference set and FID code; torchmetrics antialiases its resize by default). A number is
only comparable with numbers of the same protocol, so every result carries the protocol's name and hashes.

Protocols (``PROTOCOLS``, `protocol(name)`; docs/metrics.md says what each matches in the literature):
- ``pytorch-fid``: mseitzer/pytorch-fid: the 2015 FID Inception, bilinear resize without antialiasing on
  [0, 1] images, ``2x - 1``; pool3 features.
- ``torch-fidelity`` / ``torchmetrics``: torch-fidelity's extractor, which torchmetrics' FID wraps (given
  ``antialias=False``): TF1 bilinear resize on 0..255, ``(x - 128) / 128``.
- ``torchmetrics-antialias``: torchmetrics' default (``antialias=True``): antialiased bilinear resize.
- ``clean-fid``: clean-fid's ``clean`` mode: PIL bicubic resize of float channels, ``(x - 128) / 128``.
- ``adm``: the guided-diffusion (ADM) evaluator: the TF graph's in-graph TF1 bilinear resize, reference
  statistics from its ``.npz`` reference batches (``mu``/``sigma``; LlamaGen's and DiT's gFID use these).

API (what `tokenforge evaluate` and the leaderboard call)::

    p = protocol("pytorch-fid")
    fid = p.accumulator(weights=None, device="cpu")   # WeightsUnavailable (one line) if the file is missing
    fid.update(real_images, real=True)                 # [-1, 1] floats or uint8, [B, 3, H, W]
    fid.update(fake_images, real=False)
    fid.compute()   # {"fid": 3.1, "protocol": "pytorch-fid", "weights_sha256": "6726...", "n_real": ..., ...}

The same record holds the Inception Score of the generated images (10 splits; torch-fidelity's seeded shuffle,
or ADM's order) and, with ``compute(precision_recall=True)``, improved precision and recall (k = 3).
``accumulator(reference=PATH)`` compares the fakes with stored statistics (a ``.npz`` with ``mu``/``sigma``
as pytorch-fid, clean-fid and ADM write them, or with ``activations``) instead of real images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tokenforge.metrics import weight_files
from tokenforge.metrics.inception import FIDInception
from tokenforge.metrics.inception_input import INPUTS
from tokenforge.metrics.weights import WeightFile, locate, sha256_of


@dataclass(frozen=True)
class FIDProtocol:
    """One way of measuring FID: extractor weights, input rule, default reference and sample count."""

    name: str
    weights: WeightFile
    input_rule: str  # key of `inception_input.INPUTS`: resize filter and value map
    samples: int  # images per side the literature's numbers use (50,000 for ImageNet FIDs)
    matches: str  # the code whose numbers this reproduces
    reference: WeightFile | None = None  # default reference statistics (ADM's reference batch)
    quantise: str = "round"  # how [-1, 1] floats become 8-bit values (as a PNG writer does)
    is_logits: str = "logits_unbiased"  # IS input: pool @ fc.weight without the bias, as the original TF code
    is_shuffle: bool = True  # torch-fidelity shuffles (seed 2020) before its 10 splits; ADM splits in order
    neighbourhood: int = 3  # k of the k-NN manifolds of precision / recall (Kynkäänniemi et al. 2019)

    def describe(self) -> dict[str, Any]:
        """The protocol as a result records it (the hashes are the expected ones; `compute` adds the actual)."""
        return {"protocol": self.name, "feature_extractor": "fid-inception-2015-12-05 pool3 (2048)",
                "weights_file": self.weights.file, "weights_sha256": self.weights.sha256,
                "input": self.input_rule, "samples": self.samples, "matches": self.matches,
                "inception_score": f"{self.is_logits}, 10 splits{', shuffled (seed 2020)' if self.is_shuffle else ''}",
                "precision_recall": f"k-NN manifolds, k={self.neighbourhood}",
                "reference": None if self.reference is None else self.reference.file}

    def network(self, weights: str | os.PathLike | None = None) -> tuple[FIDInception, str]:
        """The checked Inception and its sha256; `WeightsUnavailable` (one line) when the file is missing."""
        path = locate(self.weights, weights)
        return FIDInception.load(path), sha256_of(path)

    def accumulator(self, weights: str | os.PathLike | None = None, device: str = "cpu",
                    reference: str | os.PathLike | bool | None = None, network: FIDInception | None = None,
                    batch_size: int = 50) -> FIDAccumulator:
        """An FID accumulator. ``reference``: a statistics ``.npz`` to compare the fakes with, or True for the
        protocol's own reference file (located and checked); None compares with the real images given.
        ``network`` (e.g. `FIDInception.random`, for tests) replaces the weight file."""
        if network is None:
            network, digest = self.network(weights)
        else:
            digest = None
        stats = None
        if reference is True:
            if self.reference is None:
                raise ValueError(f"protocol {self.name} has no reference file of its own; give a statistics path")
            stats = load_statistics(None, self.reference)
        elif reference:
            stats = load_statistics(reference)
        return FIDAccumulator(self, network.to(device).eval(), digest, device, stats, batch_size)

    def fid(self, real: Tensor, fake: Tensor, **options: Any) -> dict[str, Any]:
        """FID of two image sets in one call (``options`` as for `accumulator`)."""
        acc = self.accumulator(**options)
        acc.update(real, real=True)
        acc.update(fake, real=False)
        return acc.compute()


def to_pixels(images: Tensor, quantise: str = "round") -> Tensor:
    """``[B, 3, H, W]`` uint8, or floats in [-1, 1], -> float tensor of 8-bit values 0..255."""
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"FID takes [B, 3, H, W] images, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float()
    scaled = (images.float().clamp(-1, 1) + 1) * 127.5
    return scaled.round() if quantise == "round" else scaled.floor()


@dataclass
class FIDAccumulator:
    """Collects pool3 features of real and fake images; `compute` gives FID with the protocol's record."""

    protocol: FIDProtocol
    net: FIDInception
    weights_sha256: str | None
    device: str = "cpu"
    reference: dict[str, Any] | None = None
    batch_size: int = 50
    real: list[np.ndarray] = field(default_factory=list)
    fake: list[np.ndarray] = field(default_factory=list)
    fake_logits: list[np.ndarray] = field(default_factory=list)

    @torch.no_grad()
    def outputs(self, images: Tensor) -> dict[str, np.ndarray]:
        """The network's outputs (``pool`` [B, 2048], and logits where it has them) for a batch, in chunks."""
        pixels = to_pixels(images, self.protocol.quantise)
        prepare = INPUTS[self.protocol.input_rule]
        chunks = [{k: v.float().cpu().numpy() for k, v in self.net(prepare(chunk.to(self.device))).items()}
                  for chunk in pixels.split(self.batch_size)]
        if not chunks:
            return {"pool": np.zeros((0, 2048), np.float32)}
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    def features(self, images: Tensor) -> np.ndarray:
        """``[B, 2048]`` float32 pool3 features of a batch, computed ``batch_size`` images at a time."""
        return self.outputs(images)["pool"]

    def update(self, images: Tensor, real: bool) -> None:
        out = self.outputs(images)
        (self.real if real else self.fake).append(out["pool"])
        if not real and self.protocol.is_logits in out:
            self.fake_logits.append(out[self.protocol.is_logits])

    def compute(self, precision_recall: bool = False) -> dict[str, Any]:
        """``{"fid", "protocol", "weights_sha256", "reference", "reference_sha256", "n_real", "n_fake", ...}``;
        with at least 10 generated images also ``inception_score`` (mean, std over 10 splits), and with
        ``precision_recall`` (N^2 distances: opt-in) ``precision`` and ``recall`` against the real images."""
        fake = np.concatenate(self.fake) if self.fake else np.zeros((0, 2048))
        if self.reference is not None:
            mu_r, sigma_r, n_real = self.reference["mu"], self.reference["sigma"], self.reference.get("n")
        else:
            real = np.concatenate(self.real) if self.real else np.zeros((0, 2048))
            if len(real) < 2:
                raise ValueError("FID needs at least 2 real images (or reference statistics)")
            n_real = len(real)
        if len(fake) < 2:
            raise ValueError("FID needs at least 2 generated / reconstructed images")
        value = (frechet_from_statistics(*statistics(fake), mu_r, sigma_r) if self.reference is not None
                 else frechet_from_features(fake, real))
        record = {"fid": value, **self.protocol.describe(),
                  "weights_sha256": self.weights_sha256, "n_real": n_real, "n_fake": len(fake)}
        if self.reference is not None:
            record.update(reference=self.reference["file"], reference_sha256=self.reference["sha256"])
        else:
            record.update(reference="real images given", reference_sha256=None)
        logits = np.concatenate(self.fake_logits) if self.fake_logits else None
        if logits is not None and len(logits) >= 10:
            record["inception_score"] = inception_score(logits, shuffle=self.protocol.is_shuffle)
        if precision_recall:
            if self.reference is not None:
                raise ValueError("precision / recall need the real images' features, not stored statistics")
            record.update(precision_recall_of(real, fake, self.protocol.neighbourhood))
        if min(len(fake), n_real or len(fake)) < self.protocol.samples:
            record["note"] = (f"fewer than the protocol's {self.protocol.samples} images per side: not comparable "
                              "with published numbers (FID is biased upwards at small sample counts)")
        return record


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (sample) covariance of ``[N, D]`` features, in float64."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_from_statistics(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^1/2).

    Deliberate deviation from pytorch-fid / torch-fidelity / clean-fid, which take ``scipy.linalg.sqrtm`` of
    S1 S2 and keep its trace: S1 S2 is similar to the symmetric PSD matrix S1^1/2 S2 S1^1/2, so the trace of its
    root is the sum of the square roots of that matrix's eigenvalues (two ``eigh``, clipped at 0). Same value
    (the parity tests hold it to 1e-6 relative), no imaginary parts or ``eps`` retries, and far faster at 2048-d.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"statistics of different sizes: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / "
                         f"{sigma2.shape}")
    values, vectors = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root = vectors * np.sqrt(values.clip(min=0))  # S1 = root @ root.T
    inner = root.T @ sigma2 @ root
    trace_root = np.sqrt(np.linalg.eigvalsh((inner + inner.T) / 2).clip(min=0)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


def frechet_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two ``[N, D]`` feature sets (N >= 2 each), computed in the smaller of the two spaces.

    With centred features X (S = X^T X / (N - 1)), Tr((S_a S_b)^1/2) is the nuclear norm of X_a X_b^T divided
    by sqrt((N_a - 1)(N_b - 1)): an N_a x N_b problem instead of D x D when there are fewer images than feature
    dimensions (tests, small evaluations); otherwise the statistics route."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two [N>=2, D] feature sets of one D, got {a.shape} and {b.shape}")
    if len(a) + len(b) > a.shape[1]:
        return frechet_from_statistics(*statistics(a), *statistics(b))
    mu_a, mu_b = a.mean(0), b.mean(0)
    xa, xb = a - mu_a, b - mu_b
    scale_a, scale_b = len(a) - 1, len(b) - 1
    nuclear = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt(scale_a * scale_b)
    diff = mu_a - mu_b
    return float(diff @ diff + (xa * xa).sum() / scale_a + (xb * xb).sum() / scale_b - 2 * nuclear)


def inception_score(logits: np.ndarray, splits: int = 10, shuffle: bool = True) -> dict[str, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) per split, mean and std over ``splits`` equal splits; like
    torch-fidelity, the images are first shuffled with ``RandomState(2020)`` when ``shuffle``."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(f"Inception Score needs [N >= {splits}, classes] logits, got {tuple(logits.shape)}")
    n = len(logits)
    if shuffle:
        logits = logits[np.random.RandomState(2020).permutation(n)]
    log_p = logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits:(i + 1) * n // splits]
        log_marginal = part.exp().mean(dim=0, keepdim=True).log()
        scores.append(float((part.exp() * (part - log_marginal)).sum(dim=1).mean().exp()))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "splits": splits}


def _kth_radius(points: Tensor, k: int, chunk: int) -> Tensor:
    """Distance of each point to its k-th nearest other point of the same set."""
    return torch.cat([torch.cdist(part, points).kthvalue(k + 1, dim=1).values for part in points.split(chunk)])


def _inside(queries: Tensor, centres: Tensor, radii: Tensor, chunk: int) -> float:
    """Fraction of ``queries`` inside at least one ball (centre, radius)."""
    hits = [(torch.cdist(part, centres) <= radii).any(dim=1) for part in queries.split(chunk)]
    return float(torch.cat(hits).double().mean())


def precision_recall_of(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 10_000) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision is the share of generated features
    inside the real k-NN manifold (balls reaching each real point's k-th neighbour), recall the share of real
    features inside the generated one."""
    real_t, fake_t = torch.as_tensor(np.asarray(real)).float(), torch.as_tensor(np.asarray(fake)).float()
    if min(len(real_t), len(fake_t)) <= k:
        raise ValueError(f"precision / recall with k={k} need more than {k} images per side")
    precision = _inside(fake_t, real_t, _kth_radius(real_t, k, chunk), chunk)
    recall = _inside(real_t, fake_t, _kth_radius(fake_t, k, chunk), chunk)
    return {"precision": precision, "recall": recall}


def load_statistics(path: str | os.PathLike | None, weight: WeightFile | None = None) -> dict[str, Any]:
    """Reference statistics from a ``.npz``: ``mu``/``sigma`` (pytorch-fid, clean-fid, ADM reference batches)
    or ``activations`` ([N, D] features). With ``weight`` the file is located and sha256-checked first."""
    path = locate(weight, path) if weight is not None else Path(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics {path} do not exist")
    with np.load(path, allow_pickle=False) as data:
        if "mu" in data and "sigma" in data:
            mu, sigma, n = data["mu"], data["sigma"], None
        elif "activations" in data:
            (mu, sigma), n = statistics(data["activations"]), len(data["activations"])
        else:
            raise ValueError(f"{path} holds {sorted(data.files)}; reference statistics need mu and sigma "
                             "(or activations). An ADM sample batch (arr_0 images only) must be featurised first")
    return {"mu": mu, "sigma": sigma, "n": n, "file": str(path), "sha256": sha256_of(path)}


def save_statistics(path: str | os.PathLike, features: np.ndarray) -> None:
    """Write ``mu``/``sigma`` of ``[N, D]`` features as pytorch-fid's ``--save-stats`` and ADM's batches do."""
    mu, sigma = statistics(features)
    np.savez(path, mu=mu, sigma=sigma)


_FID = weight_files.FID_INCEPTION
PROTOCOLS: dict[str, FIDProtocol] = {p.name: p for p in (
    FIDProtocol("pytorch-fid", _FID, "bilinear, x/255*2-1", 50_000, "mseitzer/pytorch-fid 0.3 (fid_score.py)"),
    FIDProtocol("torch-fidelity", _FID, "tf1-bilinear, (x-128)/128", 50_000,
                "toshas/torch-fidelity 0.4 (fid, isc, prc with inception-v3-compat)"),
    FIDProtocol("torchmetrics", _FID, "tf1-bilinear, (x-128)/128", 50_000,
                "torchmetrics FrechetInceptionDistance(antialias=False) on uint8 images", quantise="floor"),
    FIDProtocol("torchmetrics-antialias", _FID, "antialiased bilinear, (x-128)/128", 50_000,
                "torchmetrics FrechetInceptionDistance() defaults (antialias=True)", quantise="floor"),
    FIDProtocol("clean-fid", _FID, "pil-bicubic float, (x-128)/128", 50_000, "GaParmar/clean-fid mode='clean'"),
    FIDProtocol("adm", _FID, "tf1-bilinear, (x-128)/128", 50_000,
                "openai/guided-diffusion evaluations/evaluator.py with its reference batches",
                reference=weight_files.ADM_IMAGENET256_REFERENCE, is_shuffle=False),
)}


def protocol(name: str) -> FIDProtocol:
    """The named protocol; `ValueError` listing the names otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown FID protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
