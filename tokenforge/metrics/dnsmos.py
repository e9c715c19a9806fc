"""DNSMOS (P.835 SIG / BAK / OVRL and P.808 MOS), offline, with the ONNX models the ``speechmos`` package ships.

DNSMOS (Reddy et al., ICASSP 2022) is Microsoft's non-intrusive speech-quality predictor from the Deep Noise
Suppression challenge: it needs no reference, so it scores a reconstruction on its own (audio codec papers'
tables report it). The ``speechmos`` wheel (PyPI, MIT) carries the challenge's ONNX files;
its `speechmos.dnsmos.DNSMOS` class does the scoring (9.01 s windows, hop 1 s, short clips tiled to 9.01 s,
the challenge's polynomial calibration of SIG/BAK/OVRL). We call that class on weight files that we locate and
check by sha256 (`tokenforge.metrics.weights`): the file inside the installed package, or
``$TOKENFORGE_HOME/weights/<file>`` when the package's copy is absent or differs. Nothing is downloaded.

Inputs at any rate are resampled to 16 kHz with torchaudio's windowed-sinc (polyphase) resampler (the challenge's
script reads files with librosa at 16 kHz; at 16 kHz input the two are the same) and clamped to [-1, 1].
Missing packages or weights raise `WeightsUnavailable` with one line that says what to install or put where;
callers that report several metrics print that line in place of the numbers.

    from tokenforge.metrics.dnsmos import dnsmos
    dnsmos(wave, 16000)   # {'sig': 3.4, 'bak': 4.0, 'ovrl': 3.1, 'p808': 3.6}
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tokenforge.metrics.weights import WeightFile, WeightsUnavailable, locate, sha256_of

RATE = 16000
KEYS = ("sig", "bak", "ovrl", "p808")  # P.835 signal, background, overall; P.808 overall
PACKAGES = ("speechmos", "onnxruntime", "librosa")
_SOURCE = "the speechmos 0.0.1.1 wheel on PyPI, file speechmos/{}"

# the challenge's models as shipped in speechmos 0.0.1.1 (sha256 of the files in the wheel)
PRIMARY = WeightFile("dnsmos", "dnsmos_sig_bak_ovr.onnx",
                     "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd",
                     _SOURCE.format("dnsmos_models/sig_bak_ovr.onnx"))
PERSONALIZED = WeightFile("dnsmos_personalized", "pdnsmos_sig_bak_ovr.onnx",
                          "9e3a197449ca2177f0997afec3bd6b890117ce2f17b89d6eea7fa0d47272c81c",
                          _SOURCE.format("pdnsmos_models/sig_bak_ovr.onnx"))
P808 = WeightFile("dnsmos_p808", "dnsmos_p808_model_v8.onnx",
                  "9246480c58567bc6affd4200938e77eef49468c8bc7ed3776d109c07456f6e91",
                  _SOURCE.format("dnsmos_models/model_v8.onnx"))
WEIGHTS = (PRIMARY, PERSONALIZED, P808)
_IN_PACKAGE = {PRIMARY.name: "dnsmos_models/sig_bak_ovr.onnx", PERSONALIZED.name: "pdnsmos_models/sig_bak_ovr.onnx",
               P808.name: "dnsmos_models/model_v8.onnx"}
_scorers: dict[tuple[str, str], Any] = {}


def versions() -> dict[str, str | None]:
    """Installed versions of the packages DNSMOS runs on (None when missing)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _check_packages() -> None:
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise WeightsUnavailable(f"dnsmos unavailable: install {', '.join(missing)} "
                                 "(pip install 'tokenforge[dev]'); they carry and run its ONNX models")


def weight_path(weight: WeightFile, path: str | Path | None = None) -> Path:
    """The checked file of one DNSMOS model: ``path``, else the installed package's copy when it has the expected
    sha256, else ``$TOKENFORGE_HOME/weights/<file>``; `WeightsUnavailable` (one line) otherwise."""
    if path is not None:
        return locate(weight, path)
    spec = importlib.util.find_spec("speechmos")
    if spec is not None and spec.origin:
        packaged = Path(spec.origin).parent / _IN_PACKAGE[weight.name]
        if packaged.is_file() and sha256_of(packaged) == weight.sha256:
            return packaged
    return locate(weight)


def _scorer(personalized: bool) -> Any:
    """speechmos' DNSMOS on checked files, with onnxruntime sessions using torch's thread count (built once)."""
    _check_packages()
    primary, p808 = weight_path(PERSONALIZED if personalized else PRIMARY), weight_path(P808)
    key = (str(primary), str(p808))
    if key not in _scorers:
        import onnxruntime as ort
        from speechmos.dnsmos import DNSMOS

        class Scorer(DNSMOS):
            def __init__(self, primary_model_path: str, p808_model_path: str) -> None:  # noqa: D401
                options = ort.SessionOptions()
                options.intra_op_num_threads = max(1, torch.get_num_threads())
                options.inter_op_num_threads = 1
                providers = ["CPUExecutionProvider"]
                self.primary_model_path = primary_model_path
                self.onnx_sess = ort.InferenceSession(primary_model_path, options, providers=providers)
                self.p808_onnx_sess = ort.InferenceSession(p808_model_path, options, providers=providers)

        _scorers[key] = Scorer(*key)
    return _scorers[key]


def to_16k(wave: Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 numpy at 16 kHz in [-1, 1] (channels ``(C, L)`` averaged; torchaudio sinc resampling)."""
    from tokenforge.data.audio import resample

    x = torch.as_tensor(wave).detach().float().cpu()
    if x.ndim == 2:
        x = x.mean(0)
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"dnsmos takes one non-empty clip, (L,) or (channels, L); got shape {tuple(x.shape)}")
    with torch.autocast("cpu", enabled=False):
        x = resample(x, int(sample_rate), RATE)
    return x.clamp(-1.0, 1.0).numpy().astype(np.float32)


def dnsmos(wave: Tensor | np.ndarray, sample_rate: int, personalized: bool = False) -> dict[str, float]:
    """DNSMOS of one clip: ``{'sig', 'bak', 'ovrl', 'p808'}`` (MOS, about 1 to 5; higher is better).

    ``wave``: ``(L,)`` or ``(channels, L)`` at ``sample_rate``. ``personalized=True`` uses the model that also
    penalises interfering talkers. Raises `WeightsUnavailable` (one line) without the packages or weights."""
    scorer = _scorer(personalized)
    audio = to_16k(wave, sample_rate)
    result = scorer(audio, RATE, personalized)
    return {"sig": float(result["sig_mos"]), "bak": float(result["bak_mos"]), "ovrl": float(result["ovrl_mos"]),
            "p808": float(result["p808_mos"])}


def describe(personalized: bool = False) -> dict[str, Any]:
    """What a result records: the model, its files and sha256, package versions, the scoring rate."""
    primary = PERSONALIZED if personalized else PRIMARY
    return {"metric": "DNSMOS P.835 (sig, bak, ovrl) + P.808", "sample_rate": RATE, "versions": versions(),
            "weights": {w.name: {"file": str(p), "sha256": sha256_of(p)}
                        for w in (primary, P808) for p in [weight_path(w)]}}


class DNSMOSMeter:
    """Accumulates DNSMOS over clips: ``update(wave, rate)`` then ``result()`` -> means, stds and provenance, or
    ``"unavailable: ..."`` (one line) when the packages or weights are missing (checked once, at the start)."""

    def __init__(self, personalized: bool = False) -> None:
        self.personalized = personalized
        self.values: dict[str, list[float]] = {k: [] for k in KEYS}
        try:
            _scorer(personalized)
            self.unavailable = None
        except WeightsUnavailable as error:
            self.unavailable = str(error)

    def update(self, wave: Tensor, sample_rate: int) -> dict[str, float] | None:
        if self.unavailable:
            return None
        scores = dnsmos(wave, sample_rate, self.personalized)
        for key in KEYS:
            self.values[key].append(scores[key])
        return scores

    def result(self) -> dict[str, Any] | str:
        if self.unavailable:
            return self.unavailable
        out: dict[str, Any] = {}
        for key in KEYS:
            finite = [v for v in self.values[key] if math.isfinite(v)]
            out[key] = {"mean": float(np.mean(finite)) if finite else None,
                        "std": float(np.std(finite)) if finite else None, "n": len(finite)}
        return {**out, **describe(self.personalized)}
