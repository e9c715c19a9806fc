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
- `utmos`: needs a local TorchScript UTMOS file (`tokenforge.metrics.utmos`); DNSMOS: `tokenforge.metrics.dnsmos`.
- `metric_rates`: the rate each metric is computed at (recorded in ``metrics.json``).

Long signals are scored in windows, so memory stays bounded whatever the length (PESQ's own buffers grow
faster than the signal: one 10-minute clip asked for 34 GB and crashed). The window rule, the same for every
metric here: a signal of ``L`` samples longer than ``window_seconds`` (default `WINDOW_SECONDS` = 30 s) is cut
into ``n = ceil(L / W)`` consecutive, non-overlapping windows of equal length (``round(i * L / n)``
boundaries, so each is between W/2 and W long and there is no short tail); every window is scored on its own
and the scores are averaged weighted by window length. PESQ/STOI leave out windows without a score (silence:
NaN) and give NaN when no window has one; the spectral distances weight by frames and sum the spectral
convergence's norms over windows; SI-SNR sums its terms window by window (the whole signal's value). A signal
no longer than the window is scored whole, exactly as before.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tokenforge.nn.mel import MelLoss

_MEL: dict[tuple, torch.nn.Module] = {}
WINDOW_SECONDS = 30.0


def windows(length: int, max_length: int) -> list[tuple[int, int]]:
    """``[start, end)`` of ``ceil(length / max_length)`` equal, non-overlapping windows covering ``[0, length)``."""
    if max_length <= 0 or length <= max_length:
        return [(0, length)]
    n = math.ceil(length / max_length)
    bounds = [round(i * length / n) for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _window_length(sample_rate: int, window_seconds: float | None) -> int:
    seconds = WINDOW_SECONDS if window_seconds is None else window_seconds
    return int(seconds * sample_rate) if seconds and seconds > 0 else 0


def _weighted(scores: list[tuple[float, int]]) -> float:
    """Length-weighted mean of the finite scores; NaN when none is finite."""
    finite = [(v, n) for v, n in scores if math.isfinite(v)]
    if not finite:
        return float("nan")
    return float(sum(v * n for v, n in finite) / sum(n for _, n in finite))


def _pair(est: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    est, ref = torch.as_tensor(est).float(), torch.as_tensor(ref).float()
    est, ref = (est[None] if est.ndim == 1 else est), (ref[None] if ref.ndim == 1 else ref)
    if est.shape[0] != ref.shape[0]:
        raise ValueError(f"estimate batch {est.shape[0]} != reference batch {ref.shape[0]}")
    n = min(est.shape[-1], ref.shape[-1])
    if n == 0:
        raise ValueError("empty signal")
    return est[..., :n], ref[..., :n].to(est.device)


def mel_distance(est: Tensor, ref: Tensor, sample_rate: int = 24000, window_seconds: float | None = None) -> Tensor:
    """L1 between log(clamp(mel, 1e-7)) spectrograms (100 mels, n_fft 1024, hop 256); long signals in windows."""
    est, ref = _pair(est, ref)
    key = (sample_rate, str(est.device))
    if key not in _MEL:
        _MEL[key] = MelLoss(sample_rate).to(est.device)
    parts = windows(est.shape[-1], _window_length(sample_rate, window_seconds))
    if len(parts) == 1:
        with torch.no_grad():
            return _MEL[key](est, ref)
    total, frames = torch.zeros((), device=est.device), 0
    with torch.no_grad():
        for start, end in parts:
            n = (end - start) // 256 + 1  # frames of a centred STFT with hop 256
            total = total + _MEL[key](est[..., start:end], ref[..., start:end]) * n
            frames += n
    return total / frames


def stft_distance(est: Tensor, ref: Tensor,
                  resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512)),
                  window_samples: int | None = None) -> Tensor:
    """Multi-resolution STFT distance: mean of spectral convergence + L1 log magnitude over resolutions.

    Signals longer than ``window_samples`` (default `WINDOW_SECONDS` at 24 kHz: 720,000) are transformed window
    by window: the convergence's squared norms are summed and the log-magnitude L1 is weighted by elements.
    """
    est, ref = _pair(est, ref)
    parts = windows(est.shape[-1], _window_length(24000, None) if window_samples is None else window_samples)
    total = torch.zeros((), device=est.device)
    with torch.no_grad():
        for n_fft, hop in resolutions:
            window = torch.hann_window(n_fft, device=est.device)
            norms, l1s = [], []  # per window: (|S_r - S_e|, |S_r|) and (mean |log S_r - log S_e|, elements)
            for start, end in parts:
                s_e, s_r = (torch.stft(s[..., start:end], n_fft, hop, window=window, return_complex=True)
                            .abs().clamp_min(1e-7) for s in (est, ref))
                norms.append((torch.linalg.norm(s_r - s_e), torch.linalg.norm(s_r)))
                l1s.append(((s_r.log() - s_e.log()).abs().mean(), s_r.numel()))
            if len(parts) == 1:
                convergence = norms[0][0] / norms[0][1].clamp_min(1e-7)
                log_l1 = l1s[0][0]
            else:
                diff, ref_norm = (torch.stack([n[i] for n in norms]).square().sum().sqrt() for i in (0, 1))
                convergence = diff / ref_norm.clamp_min(1e-7)
                log_l1 = sum(m * c for m, c in l1s) / sum(c for _, c in l1s)
            total = total + convergence + log_l1
    return total / len(resolutions)


def si_snr(est: Tensor, ref: Tensor, eps: float = 1e-8, window_samples: int | None = None) -> Tensor:
    """Scale-invariant SNR in dB, mean over the batch.

    Signals longer than ``window_samples`` (default 720,000) accumulate the same sums window by window, so no
    full-length temporary is made (the value is that of the whole signal, not a mean over windows).
    """
    est, ref = _pair(est, ref)
    parts = windows(est.shape[-1], _window_length(24000, None) if window_samples is None else window_samples)
    if len(parts) == 1:
        est, ref = est - est.mean(-1, keepdim=True), ref - ref.mean(-1, keepdim=True)
        target = (est * ref).sum(-1, keepdim=True) / (ref.square().sum(-1, keepdim=True) + eps) * ref
        noise = est - target
        return (10 * torch.log10(target.square().sum(-1) / (noise.square().sum(-1) + eps) + eps)).mean()
    e_mean, r_mean = est.mean(-1, keepdim=True), ref.mean(-1, keepdim=True)

    def centred():  # one window at a time: (est - mean, ref - mean)
        return ((est[..., a:b] - e_mean, ref[..., a:b] - r_mean) for a, b in parts)

    dot = sum((e * r).sum(-1, keepdim=True) for e, r in centred())
    scale = dot / (sum(r.square().sum(-1, keepdim=True) for _, r in centred()) + eps)
    target = sum((scale * r).square().sum(-1) for _, r in centred())
    noise = sum((e - scale * r).square().sum(-1) for e, r in centred())
    return (10 * torch.log10(target / (noise + eps) + eps)).mean()


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


def _pesq_one(est: Tensor, ref: Tensor, sample_rate: int) -> float:
    from pesq import pesq as _pesq

    from tokenforge.data.audio import resample

    with torch.autocast("cpu", enabled=False):  # callers may sit inside a (CPU) autocast region
        e16, r16 = (resample(s.cpu().float(), sample_rate, 16000).float().numpy().astype(np.float64)
                    for s in (est, ref))
    try:
        return float(_pesq(16000, r16, e16, "wb"))
    except Exception:  # pesq raises NoUtterancesError / BufferTooShortError on silence or tiny inputs
        return float("nan")


def _stoi_one(est: np.ndarray, ref: np.ndarray, sample_rate: int) -> float:
    from pystoi import stoi as _stoi

    try:
        value = float(_stoi(ref, est, sample_rate, extended=False))
    except Exception:
        return float("nan")
    return value if value > 1e-5 else float("nan")  # pystoi's 1e-5: too few speech frames


def pesq_wb(est: Tensor, ref: Tensor, sample_rate: int, window_seconds: float | None = None) -> list[float]:
    """Wideband PESQ per item at 16 kHz (NaN where PESQ finds no utterance); long items in windows (see top)."""
    import pesq  # noqa: F401  (ImportError here, before any work, when the package is missing)

    est, ref = _pair(est, ref)
    size = _window_length(sample_rate, window_seconds)
    return [_weighted([(_pesq_one(e[a:b], r[a:b], sample_rate), b - a) for a, b in windows(len(e), size)])
            for e, r in zip(est, ref)]


def stoi(est: Tensor, ref: Tensor, sample_rate: int, window_seconds: float | None = None) -> list[float]:
    """STOI per item (pystoi, extended=False) at the native rate; long items in windows (see top)."""
    import pystoi  # noqa: F401

    est, ref = _pair(est, ref)
    size = _window_length(sample_rate, window_seconds)
    return [_weighted([(_stoi_one(_numpy(e[a:b]), _numpy(r[a:b]), sample_rate), b - a)
                       for a, b in windows(len(e), size)]) for e, r in zip(est, ref)]


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


def metric_rates(model_rate: int) -> dict[str, int]:
    """The rate (Hz) each audio metric is computed at, recorded beside the numbers: the spectral distances and
    SI-SNR at the model's rate, PESQ wideband at 16 kHz, STOI at pystoi's 10 kHz (it resamples internally),
    DNSMOS and UTMOS at 16 kHz (their models' rate)."""
    return {"mel_distance": int(model_rate), "stft_distance": int(model_rate), "si_snr_db": int(model_rate),
            "pesq": 16000, "stoi": 10000, "dnsmos": 16000, "utmos": 16000}


def utmos(est: Tensor, sample_rate: int, weights: str | Path | None = None) -> list[float]:
    """UTMOS per item from a local TorchScript file (`tokenforge.metrics.utmos`, where it lives)."""
    from tokenforge.metrics.utmos import utmos as _utmos

    return _utmos(est, sample_rate, weights)


class SpeechQuality:
    """Reference-free speech quality of reconstructions, clip by clip: DNSMOS (`tokenforge.metrics.dnsmos`) and
    UTMOS (`tokenforge.metrics.utmos`), each only when asked. `scores` gives flat per-clip numbers
    (``dnsmos_sig``, ``dnsmos_bak``, ``dnsmos_ovrl``, ``dnsmos_p808``, ``utmos``); `describe` the means with
    package versions and weight hashes, or each metric's one-line ``"... unavailable: ..."`` reason."""

    def __init__(self, dnsmos: bool = False, utmos_weights: str | Path | None = None, utmos: bool = False) -> None:
        from tokenforge.metrics.dnsmos import DNSMOSMeter
        from tokenforge.metrics.utmos import UTMOSMeter

        self.dnsmos = DNSMOSMeter() if dnsmos else None
        self.utmos = UTMOSMeter(utmos_weights) if utmos or utmos_weights else None

    def unavailable(self) -> list[str]:
        """The reasons of the asked metrics that cannot run (one line each)."""
        return [m.unavailable for m in (self.dnsmos, self.utmos) if m is not None and m.unavailable]

    def scores(self, wave: Tensor, sample_rate: int) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.dnsmos is not None:
            found = self.dnsmos.update(wave, sample_rate)
            out.update({f"dnsmos_{k}": v for k, v in (found or {}).items()})
        if self.utmos is not None:
            value = self.utmos.update(wave, sample_rate)
            if value is not None:
                out["utmos"] = value
        return out

    def describe(self) -> dict[str, object]:
        return {name: meter.result() for name, meter in (("dnsmos", self.dnsmos), ("utmos", self.utmos))
                if meter is not None}
