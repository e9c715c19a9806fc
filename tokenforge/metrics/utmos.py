"""UTMOS (Saeki et al., 2022: the UTokyo-SaruLab MOS predictor of the VoiceMOS challenge) from a local checkpoint.

UTMOS has no package that carries its weights, and the official UTMOS code loads a Lightning checkpoint through
fairseq; here the checkpoint is a TorchScript file the researcher provides, mapping ``(B, L)`` float 16 kHz
waves to ``(B,)`` or ``(B, 1)`` scores: `export_torchscript` (``tools/export_utmos.py``) writes one from the
``utmos22_strong`` predictor of the SpeechMOS repository (a plain-PyTorch UTMOS22 strong learner), traced at
16 kHz and checked on a second input length.
Its file is given by path or found as ``$TOKENFORGE_HOME/weights/utmos.pt`` (`tokenforge.metrics.weights`;
any sha256 is accepted, the one found is recorded). Without it, `WeightsUnavailable` says where to put it.
Inputs at any rate are resampled to 16 kHz (torchaudio windowed sinc). Nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tokenforge.metrics.weights import WeightFile, WeightsUnavailable, locate, sha256_of

RATE = 16000
WEIGHT = WeightFile("utmos", "utmos.pt", None,
                    "a TorchScript export of a UTMOS predictor, e.g. SpeechMOS' utmos22_strong (see module docstring)")
WEIGHTS = (WEIGHT,)  # the weight table of this metric, as `tokenforge.metrics.dnsmos.WEIGHTS`
_models: dict[str, torch.jit.ScriptModule] = {}


def _model(weights: str | Path | None) -> tuple[torch.jit.ScriptModule, Path]:
    path = locate(WEIGHT, weights)
    key = str(path.resolve())
    if key not in _models:
        try:
            _models[key] = torch.jit.load(key, map_location="cpu").eval()
        except RuntimeError as error:
            raise WeightsUnavailable(f"utmos unavailable: {path} is not a TorchScript file "
                                     f"({str(error).splitlines()[0]}); export the predictor with torch.jit") from None
    return _models[key], path


def utmos(est: Tensor, sample_rate: int, weights: str | Path | None = None) -> list[float]:
    """UTMOS per item of ``(B, L)`` (or ``(L,)``) audio at ``sample_rate``; `WeightsUnavailable` without weights."""
    from tokenforge.data.audio import resample

    model, _ = _model(weights)
    est = torch.as_tensor(est).detach().float().cpu()
    est = est[None] if est.ndim == 1 else est
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        wave = torch.stack([resample(e, int(sample_rate), RATE) for e in est])
        return [float(v) for v in model(wave).reshape(-1)]


class UTMOSMeter:
    """Accumulates UTMOS over clips (``update(wave, rate)``, ``result()``); ``result()`` is the one-line
    ``"utmos unavailable: ..."`` when no checkpoint was given or found."""

    def __init__(self, weights: str | Path | None = None) -> None:
        self.weights, self.values = weights, []
        try:
            self.path: Path | None = _model(weights)[1]
            self.unavailable = None
        except WeightsUnavailable as error:
            self.path, self.unavailable = None, str(error)

    def update(self, wave: Tensor, sample_rate: int) -> float | None:
        if self.unavailable:
            return None
        value = float(np.mean(utmos(wave, sample_rate, self.path)))
        self.values.append(value)
        return value

    def result(self) -> dict[str, Any] | str:
        if self.unavailable:
            return self.unavailable
        finite = [v for v in self.values if math.isfinite(v)]
        return {"mean": float(np.mean(finite)) if finite else None, "std": float(np.std(finite)) if finite else None,
                "n": len(finite), "sample_rate": RATE, "versions": {"torch": torch.__version__},
                "weights": {"file": str(self.path), "sha256": sha256_of(self.path)}}


class _At16k(torch.nn.Module):
    """A predictor called as ``predictor(wave, 16000)`` (SpeechMOS' interface) seen as ``forward(wave)``."""

    def __init__(self, predictor: torch.nn.Module) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, wave: Tensor) -> Tensor:
        return self.predictor(wave, RATE).reshape(-1)


def export_torchscript(predictor: torch.nn.Module, out: str | Path, probe_seconds: tuple[float, ...] = (1.0, 2.7),
                       rtol: float = 1e-4) -> str:
    """Trace ``predictor(wave (B, L), sr) -> (B,)`` at 16 kHz into the TorchScript file `utmos` reads; returns its
    sha256. The trace is checked on a second, different length (a trace that froze the input length is refused
    with `ValueError`: script the predictor instead)."""
    wrapped = _At16k(predictor.eval()).eval()
    generator = torch.Generator().manual_seed(0)
    probes = [0.1 * torch.randn(1, int(s * RATE), generator=generator) for s in probe_seconds]
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, probes[0], check_trace=False)
        for probe in probes[1:]:
            if not torch.allclose(traced(probe), wrapped(probe), rtol=rtol, atol=1e-5):
                raise ValueError(f"the traced predictor differs from the eager one on {probe.shape[-1]} samples: "
                                 "the trace fixed a length; script it (torch.jit.script) instead")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(out))
    return sha256_of(out)
