"""Audio files through an audio tokenizer: read any file robustly, encode/decode long audio in chunks, and score
a reconstruction (`audio_metrics`); what `tokenforge encode | decode | reconstruct` do with audio inputs
(`tokenforge.tokenizer_verbs`).

The tokenizer is any module with ``sample_rate``, ``hop_length``, ``vocab_size``, ``encode(wave [1, L]) ->
Tokens`` (ids ``[1, T]``) and ``decode(ids [1, T]) -> wave``.

`load_audio` reads with soundfile, mixes to mono, resamples to the tokenizer's rate and refuses, with a one-line
reason (`AudioFileError`), what cannot be reconstructed: an empty file, a file soundfile cannot read (not
audio), no frames, non-finite (NaN/inf) samples. Very short clips (e.g. 0.05 s) are fine: the encoder pads.

`encode_long` / `decode_long` process long inputs in chunks of ``chunk_seconds`` with ``context_seconds`` of
real neighbouring audio (or codes) on each side; only each chunk's central part is kept, so the result has no
seams from reflect padding and the attention over time stays bounded (the backbone's attention is O(T^2)).
Chunk edges fall on frame boundaries. ``chunk_seconds=0`` processes the whole file at once.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor



class AudioFileError(ValueError):
    """A file that cannot be reconstructed; the message is the one-line reason."""


def load_audio(path: str | Path, sample_rate: int) -> tuple[Tensor, dict[str, Any]]:
    """float32 mono ``(L,)`` at ``sample_rate`` and facts about the source (rate, channels, seconds)."""
    import soundfile as sf

    from tokenforge.data.audio import resample

    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path.name}: empty file (0 bytes)")
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioFileError(f"{path.name}: not a readable audio file ({str(error).splitlines()[0]})") from None
    if wave.shape[0] == 0:
        raise AudioFileError(f"{path.name}: no audio frames")
    bad = int((~np.isfinite(wave)).sum())
    if bad:
        raise AudioFileError(f"{path.name}: {bad} non-finite samples (NaN/inf); repair or drop the file")
    channels = wave.shape[1]
    mono = torch.from_numpy(wave.mean(axis=1, dtype=np.float32))
    if rate != sample_rate:
        mono = resample(mono, rate, sample_rate)
    facts = {"source_rate": int(rate), "channels": int(channels), "seconds": wave.shape[0] / rate}
    return mono.contiguous(), facts


def _autocast(device: torch.device, bf16: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _spans(total: int, chunk: int, context: int) -> list[tuple[int, int, int, int]]:
    """(keep_start, keep_end, window_start, window_end) in frames covering ``[0, total)``."""
    if chunk <= 0 or total <= chunk:
        return [(0, total, 0, total)]
    return [(s, min(s + chunk, total), max(0, s - context), min(total, s + chunk + context))
            for s in range(0, total, chunk)]


@torch.no_grad()
def encode_long(model: Any, wave: Tensor, chunk_seconds: float = 30.0, context_seconds: float = 1.0,
                bf16: bool = False) -> Tensor:
    """``(L,)`` waveform -> codes ``(ceil(L / hop),)`` (int64), chunked with context (see module docstring)."""
    hop, rate = model.hop_length, model.sample_rate
    device = next(model.parameters()).device
    frames = math.ceil(wave.numel() / hop)
    chunk, context = int(chunk_seconds * rate / hop), int(math.ceil(context_seconds * rate / hop))
    codes = torch.empty(frames, dtype=torch.long)
    for keep0, keep1, win0, win1 in _spans(frames, chunk, context):
        piece = wave[win0 * hop: win1 * hop].to(device)[None]
        with _autocast(device, bf16):
            ids = model.encode(piece).ids[0].cpu()
        codes[keep0:keep1] = ids[keep0 - win0: keep1 - win0]
    return codes


@torch.no_grad()
def decode_long(model: Any, codes: Tensor, num_samples: int | None = None, chunk_seconds: float = 30.0,
                context_seconds: float = 1.0, bf16: bool = False) -> Tensor:
    """Codes ``(T,)`` -> waveform ``(num_samples or T * hop,)``, chunked with context."""
    hop, rate = model.hop_length, model.sample_rate
    device = next(model.parameters()).device
    codes = torch.as_tensor(codes).long().reshape(-1)
    chunk, context = int(chunk_seconds * rate / hop), int(math.ceil(context_seconds * rate / hop))
    out = torch.empty(codes.numel() * hop)
    for keep0, keep1, win0, win1 in _spans(codes.numel(), chunk, context):
        with _autocast(device, bf16):
            wave = model.decode(codes[win0:win1].to(device)[None])[0].float().cpu()
        out[keep0 * hop: keep1 * hop] = wave[(keep0 - win0) * hop: (keep1 - win0) * hop]
    return out[:num_samples] if num_samples else out


def audio_metrics(recon: Tensor, wave: Tensor, rate: int) -> dict[str, float]:
    """Mel and STFT distance, SI-SNR, PESQ-WB and STOI of one reconstruction against its input, rounded."""
    from tokenforge.metrics import audio as M

    out = {"mel_distance": float(M.mel_distance(recon, wave, rate)),
           "stft_distance": float(M.stft_distance(recon, wave)), "si_snr_db": float(M.si_snr(recon, wave))}
    out.update({k: v for k, v in M.pesq_stoi(recon[None], wave[None], rate).items()})
    return {k: round(v, 4) for k, v in out.items()}
