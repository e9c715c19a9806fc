"""Audio: soundfile-readable files -> mono 16-bit FLAC at one sample rate; and back to float32 segments.

Writing (`prepare`): read with soundfile (torchaudio 2.11 cannot read files without TorchCodec), mix to mono
by averaging channels, resample with torchaudio (windowed sinc; file I/O stays with soundfile) when the rate differs, optionally cut
into consecutive ``segment_seconds`` pieces (a last piece shorter than ``min_seconds`` is dropped), and store
each as FLAC PCM_16. Rejected with the reason: unreadable, non-finite samples (NaN/inf), shorter than
``min_seconds``, or silent (RMS below ``silence_db`` dBFS).
Reading (`Decoder`): FLAC -> float32 mono, resampled if the shard's rate differs from the requested one, a
``segment_samples`` window (random start in training, the start otherwise; zero-padded when shorter), and an
optional random gain of up to ``gain_db`` dB either way in training (clamped to [-1, 1]).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio

from tokenforge.data.shards import EpochSeed, Rejected, WorkerRandom

MODALITY = "audio"
EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".w64", ".caf")
PCM16_MAX = 32767 / 32768


def check_options(sample_rate: int = 24000, segment_seconds: float | None = None, min_seconds: float = 0.5,
                  silence_db: float = -60.0) -> dict[str, Any]:
    if sample_rate < 1000:
        raise ValueError(f"sample_rate {sample_rate} Hz is too low")
    if segment_seconds is not None and segment_seconds < min_seconds:
        raise ValueError(f"segment_seconds ({segment_seconds}) must be at least min_seconds ({min_seconds})")
    return {"sample_rate": sample_rate, "segment_seconds": segment_seconds, "min_seconds": min_seconds,
            "silence_db": silence_db}


def describe(options: dict[str, Any]) -> dict[str, Any]:
    return {"sample_rate": options["sample_rate"], "audio_format": "flac", "subtype": "PCM_16"}


def read_mono(data: bytes | Path) -> tuple[np.ndarray, int]:
    """float32 mono samples and the rate of an audio file (path or bytes)."""
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    wave, rate = sf.read(source, dtype="float32", always_2d=True)
    return wave.mean(axis=1, dtype=np.float32), int(rate)


def resample(wave: np.ndarray | torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """Band-limited resampling of a signal (last axis) with ``torchaudio.functional.resample``: a Hann-windowed
    sinc filter applied in polyphase form (rates reduced by their gcd, one filter phase per output sample of a
    period, as a strided convolution), its defaults (lowpass_filter_width 6, rolloff 0.99). The one resampler of
    the project: shards, `load_audio`, decode's ``--output-rate``, PESQ/DNSMOS/UTMOS inputs."""
    x = torch.as_tensor(wave, dtype=torch.float32)
    return x if rate == target else torchaudio.functional.resample(x, rate, target)


def flac_bytes(wave: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, PCM16_MAX), rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def prepare(path: Path, *, sample_rate: int, segment_seconds: float | None, min_seconds: float,
            silence_db: float) -> list[dict[str, Any]]:
    """Samples ``{"flac": bytes, "json": facts}`` (one per segment; ``__suffix__`` tells them apart)."""
    if path.stat().st_size == 0:
        raise Rejected("empty file (0 bytes)")
    try:
        wave, rate = read_mono(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise Rejected(f"unreadable audio: {error}") from None
    if wave.size == 0:
        raise Rejected("no audio frames")
    if not np.isfinite(wave).all():
        raise Rejected(f"non-finite samples (NaN/inf) in {int((~np.isfinite(wave)).sum())} frames")
    if wave.size < min_seconds * rate:
        raise Rejected(f"too short: {wave.size / rate:.3f} s < min_seconds={min_seconds}")
    wave = resample(wave, rate, sample_rate).numpy()
    pieces = [wave]
    if segment_seconds:
        step = int(round(segment_seconds * sample_rate))
        pieces = [wave[i:i + step] for i in range(0, len(wave), step)]
        pieces = [p for p in pieces if len(p) >= min_seconds * sample_rate]
    samples = []
    for index, piece in enumerate(pieces):
        rms = float(np.sqrt(np.mean(np.square(piece, dtype=np.float64))))
        if rms <= 10 ** (silence_db / 20):
            continue
        facts = {"sample_rate": sample_rate, "frames": len(piece), "source": path.name, "source_rate": rate,
                 "offset": index * (len(pieces[0]) if segment_seconds else 0)}
        suffix = f"__s{index:04d}" if segment_seconds else ""
        samples.append({"__suffix__": suffix, "flac": flac_bytes(piece, sample_rate),
                        "json": json.dumps(facts).encode()})
    if not samples:
        level = 20 * np.log10(max(float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))), 1e-12))
        raise Rejected(f"silent: RMS {level:.1f} dBFS <= silence_db={silence_db}")
    return samples


class Decoder:
    """Picklable per-sample decode: raw sample -> ``{"audio": float32 [segment_samples]}``."""

    def __init__(self, sample_rate: int = 24000, segment_samples: int | None = 24000, train: bool = True,
                 gain_db: float = 0.0, seed: int | EpochSeed = 0) -> None:
        self.sample_rate, self.segment_samples, self.train, self.gain_db = sample_rate, segment_samples, train, gain_db
        self.rng = WorkerRandom(seed, "decode")

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        member = next((sample[e] for e in ("flac", "wav", "ogg") if e in sample), None)
        if member is None:
            raise KeyError(f"sample {sample.get('__key__')!r} has no flac/wav/ogg member (members: {sorted(sample)})")
        wave, rate = read_mono(member)
        audio = resample(wave, rate, self.sample_rate)
        if not torch.isfinite(audio).all():
            raise ValueError("decoded audio has non-finite samples")
        n = self.segment_samples
        if n:
            if len(audio) > n:
                start = self.rng.randint(0, len(audio) - n) if self.train else 0
                audio = audio[start:start + n]
            elif len(audio) < n:
                audio = torch.nn.functional.pad(audio, (0, n - len(audio)))
        if self.train and self.gain_db:
            audio = (audio * 10 ** (self.rng.uniform(-self.gain_db, self.gain_db) / 20)).clamp(-1.0, 1.0)
        return {"audio": audio.contiguous()}
