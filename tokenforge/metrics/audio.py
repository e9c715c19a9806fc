"""Audio reconstruction metrics: mel distance, multi-resolution STFT distance, SI-SNR, PESQ, STOI, UTMOS.

All take ``(B, L)`` (or ``(L,)``) float tensors, estimate first and reference second, and trim both to the
common length. Distances return batch means as tensors (usable in training logs); PESQ/STOI return floats.
- `mel_distance`: L1 between log-mel spectrograms (Vocos' loss front end: 100 mels, n_fft 1024, hop 256).
- `stft_distance`: mean over resolutions (512/128, 1024/256, 2048/512; Hann) of spectral convergence +
  L1 log-magnitude (the Parallel WaveGAN multi-resolution STFT loss).
- `si_snr`: scale-invariant SNR in dB (zero-mean signals).
- `pesq_wb`: wideband PESQ at 16 kHz (``pesq`` package; inputs resampled), as WavTokenizer's evaluation;
  `stoi`: STOI (``pystoi``, extended=False) at the native rate. Per-file failures (e.g. no utterance found
  in silence) give NaN, and `pesq_stoi` averages over the files that have a score.
- `utmos`: needs a local TorchScript UTMOS file (``weights=`` path); nothing is downloaded.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

_MEL: dict[tuple, torch.nn.Module] = {}


def _pair(est: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    est, ref = torch.as_tensor(est).float(), torch.as_tensor(ref).float()
    est, ref = (est[None] if est.ndim == 1 else est), (ref[None] if ref.ndim == 1 else ref)
    if est.shape[0] != ref.shape[0]:
        raise ValueError(f"estimate batch {est.shape[0]} != reference batch {ref.shape[0]}")
    n = min(est.shape[-1], ref.shape[-1])
    if n == 0:
        raise ValueError("empty signal")
    return est[..., :n], ref[..., :n].to(est.device)


def mel_distance(est: Tensor, ref: Tensor, sample_rate: int = 24000) -> Tensor:
    """L1 between log(clamp(mel, 1e-7)) spectrograms (100 mels, n_fft 1024, hop 256)."""
    from tokenforge.tokenizers.wavtokenizer.losses import MelLoss

    est, ref = _pair(est, ref)
    key = (sample_rate, str(est.device))
    if key not in _MEL:
        _MEL[key] = MelLoss(sample_rate).to(est.device)
    with torch.no_grad():
        return _MEL[key](est, ref)


def stft_distance(est: Tensor, ref: Tensor,
                  resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))) -> Tensor:
    """Multi-resolution STFT distance: mean of spectral convergence + L1 log magnitude over resolutions."""
    est, ref = _pair(est, ref)
    total = torch.zeros((), device=est.device)
    with torch.no_grad():
        for n_fft, hop in resolutions:
            window = torch.hann_window(n_fft, device=est.device)
            s_e, s_r = (torch.stft(s, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-7)
                        for s in (est, ref))
            convergence = torch.linalg.norm(s_r - s_e) / torch.linalg.norm(s_r).clamp_min(1e-7)
            total = total + convergence + (s_r.log() - s_e.log()).abs().mean()
    return total / len(resolutions)


def si_snr(est: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SNR in dB, mean over the batch."""
    est, ref = _pair(est, ref)
    est, ref = est - est.mean(-1, keepdim=True), ref - ref.mean(-1, keepdim=True)
    target = (est * ref).sum(-1, keepdim=True) / (ref.square().sum(-1, keepdim=True) + eps) * ref
    noise = est - target
    return (10 * torch.log10(target.square().sum(-1) / (noise.square().sum(-1) + eps) + eps)).mean()


def _numpy_rows(x: Tensor) -> list[np.ndarray]:
    return [row.astype(np.float64) for row in x.detach().cpu().float().numpy()]


def pesq_wb(est: Tensor, ref: Tensor, sample_rate: int) -> list[float]:
    """Wideband PESQ per item at 16 kHz (NaN where PESQ finds no utterance)."""
    from pesq import pesq as _pesq

    from tokenforge.data.audio import resample

    est, ref = _pair(est, ref)
    scores = []
    for e, r in zip(est, ref):
        with torch.autocast("cpu", enabled=False):  # callers may sit inside a (CPU) autocast region
            e16, r16 = (resample(s.cpu().float(), sample_rate, 16000).float().numpy().astype(np.float64)
                        for s in (e, r))
        try:
            scores.append(float(_pesq(16000, r16, e16, "wb")))
        except Exception:  # pesq raises NoUtterancesError / BufferTooShortError on silence or tiny inputs
            scores.append(float("nan"))
    return scores


def stoi(est: Tensor, ref: Tensor, sample_rate: int) -> list[float]:
    """STOI per item (pystoi, extended=False) at the native rate."""
    from pystoi import stoi as _stoi

    est, ref = _pair(est, ref)
    scores = []
    for e, r in zip(_numpy_rows(est), _numpy_rows(ref)):
        try:
            value = float(_stoi(r, e, sample_rate, extended=False))
            scores.append(value if value > 1e-5 else float("nan"))  # pystoi's 1e-5: too few speech frames
        except Exception:
            scores.append(float("nan"))
    return scores


def pesq_stoi(est: Tensor, ref: Tensor, sample_rate: int) -> dict[str, float]:
    """Batch means of PESQ-WB and STOI over the items that have a score (keys absent when none has).

    A metric whose package is not installed (``pesq`` has no wheel for some Pythons) is left out with a
    warning instead of failing validation.
    """
    out = {}
    for name, fn in (("pesq", pesq_wb), ("stoi", stoi)):
        try:
            values = fn(est, ref, sample_rate)
        except ImportError as error:
            warnings.warn(f"{name} is skipped: {error} (install the tokenforge[dev] extra for it)", stacklevel=2)
            continue
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            out[name] = float(np.mean(finite))
    return out


def utmos(est: Tensor, sample_rate: int, weights: str | Path) -> list[float]:
    """UTMOS per item from a local TorchScript model taking (B, L) 16 kHz audio; never downloads."""
    from tokenforge.data.audio import resample

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"UTMOS needs a local TorchScript file (weights=...); {path} does not exist")
    model = torch.jit.load(str(path), map_location="cpu").eval()
    est = est[None] if est.ndim == 1 else est
    wave = torch.stack([resample(e.cpu().float(), sample_rate, 16000) for e in est])
    with torch.no_grad():
        return [float(v) for v in model(wave).reshape(-1)]
