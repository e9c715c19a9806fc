"""Audio files through an audio tokenizer: read any file robustly, encode/decode long audio in chunks, and score
a reconstruction (`audio_metrics`); what `tokenforge encode | decode | reconstruct` do with audio inputs
(`tokenforge.tokenizer_verbs`).

The tokenizer is any module with ``sample_rate``, ``hop_length``, ``vocab_size``, ``encode(wave [B, L], lengths)
-> Tokens`` (ids ``[B, T]``, `Tokens.lengths` frames; each item's codes equal its own alone), ``decode(ids [B, T],
lengths) -> wave [B, max(lengths)]`` and ``receptive_field()`` (`tokenforge.receptive_field.ReceptiveField` of
its encoder; a causal recurrent encoder also sets ``recurrent_warmup_seconds``).

`load_audio` reads with soundfile, mixes to mono, resamples to the tokenizer's rate and refuses, with a one-line
reason (`AudioFileError`), what cannot be reconstructed: an empty file, a file soundfile cannot read (not
audio), no frames, non-finite (NaN/inf) samples. Very short clips (e.g. 0.05 s) are fine: the encoder pads.

`encode_many` / `decode_many` put files that fit one chunk through the model as one padded batch with lengths.
`encode_long` encodes long inputs in chunks of ``chunk_seconds`` whose windows carry the context the encoder's
receptive field needs (`encoder_context`: exact for the convolutions, plus a measured warm-up for a causal
LSTM), so the codes equal the whole file's. `decode_long` decodes chunks with ``context_seconds`` of codes on
each side and blends neighbours over ``crossfade_seconds`` (the decoder attends over its whole window, so chunked
output is close to, not equal to, a whole decode; the seam error is measured in docs/methods/wavtokenizer.md).
Chunk edges fall on frame boundaries. ``chunk_seconds=0`` processes the whole file at once. Memory is bounded
by one chunk's window plus the input and output waveforms. `tokenforge.audio_stream` streams the same windows.
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


def bf16_autocast(device: torch.device, bf16: bool) -> Any:
    """bf16 autocast on ``device`` when asked, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def chunk_spans(total: int, chunk: int, left: int, right: int | None = None) -> list[tuple[int, int, int, int]]:
    """(keep_start, keep_end, window_start, window_end) in frames covering ``[0, total)``: chunks of ``chunk``
    frames with ``left`` / ``right`` frames of real context (``right`` defaults to ``left``)."""
    right = left if right is None else right
    if chunk <= 0 or total <= chunk:
        return [(0, total, 0, total)]
    return [(s, min(s + chunk, total), max(0, s - left), min(total, s + chunk + right))
            for s in range(0, total, chunk)]


def encoder_context(model: Any, warmup_seconds: float | None = None) -> tuple[int, int]:
    """Frames of context (left, right) a chunk needs so its codes equal the whole file's, from the encoder's
    receptive field (`model.receptive_field()`, `tokenforge.receptive_field`). A causal recurrent layer reads the
    whole past: ``warmup_seconds`` (default: the model's ``recurrent_warmup_seconds``) of extra left context let
    it forget the window's start; its effect is measured, not derived (docs/methods/wavtokenizer.md)."""
    field = model.receptive_field()
    if field.stride != model.hop_length:
        raise ValueError(f"receptive field stride {field.stride} != hop_length {model.hop_length}")
    if field.recurrent == "bidirectional":
        raise ValueError("the encoder reads the whole file in both directions: encode with chunk_seconds=0")
    left, right = field.context_frames()
    if field.recurrent == "causal":
        seconds = getattr(model, "recurrent_warmup_seconds", 0.0) if warmup_seconds is None else warmup_seconds
        left += math.ceil(seconds * model.sample_rate / model.hop_length)
    return left, right


@torch.no_grad()
def encode_long(model: Any, wave: Tensor, chunk_seconds: float = 30.0, context_seconds: float | None = None,
                bf16: bool = False, warmup_seconds: float | None = None) -> Tensor:
    """``(L,)`` waveform -> codes ``(ceil(L / hop),)`` (int64), in chunks of ``chunk_seconds`` whose windows
    carry `encoder_context` frames of real audio (``context_seconds`` given: that much on each side instead)."""
    hop, rate = model.hop_length, model.sample_rate
    device = next(model.parameters()).device
    frames = math.ceil(wave.numel() / hop)
    chunk = max(1, int(chunk_seconds * rate / hop)) if chunk_seconds > 0 else 0
    if context_seconds is None:
        left, right = encoder_context(model, warmup_seconds)
    else:
        left = right = int(math.ceil(context_seconds * rate / hop))
    codes = torch.empty(frames, dtype=torch.long)
    for keep0, keep1, win0, win1 in chunk_spans(frames, chunk, left, right):
        piece = wave[win0 * hop: win1 * hop].to(device)[None]
        with bf16_autocast(device, bf16):
            ids = model.encode(piece).ids[0].cpu()
        codes[keep0:keep1] = ids[keep0 - win0: keep1 - win0]
    return codes


def _padded(waves: list[Tensor]) -> Tensor:
    batch = waves[0].new_zeros(len(waves), max(w.numel() for w in waves))
    for i, wave in enumerate(waves):
        batch[i, :wave.numel()] = wave
    return batch


@torch.no_grad()
def encode_many(model: Any, waves: list[Tensor], chunk_seconds: float = 30.0, bf16: bool = False) -> list[Tensor]:
    """Codes ``(ceil(L_i / hop),)`` of each waveform: files that fit one chunk go through the model together as one
    padded batch with their lengths (``model.encode(batch, lengths)``: each item's codes equal its own), longer
    ones through `encode_long`. Equal to encoding each file alone (tests/test_audio_batched.py)."""
    device = next(model.parameters()).device
    limit = chunk_seconds * model.sample_rate if chunk_seconds > 0 else math.inf
    codes: list[Tensor | None] = [None] * len(waves)
    short = [i for i, w in enumerate(waves) if w.numel() <= limit]
    for i, wave in enumerate(waves):
        if i not in short:
            codes[i] = encode_long(model, wave, chunk_seconds, bf16=bf16)
    if short:
        lengths = [waves[i].numel() for i in short]
        with bf16_autocast(device, bf16):
            tokens = model.encode(_padded([waves[i] for i in short]).to(device), lengths)
        for row, i in enumerate(short):
            codes[i] = tokens.ids[row, :int(tokens.lengths[row])].cpu()
    return codes  # type: ignore[return-value]


@torch.no_grad()
def decode_many(model: Any, codes: list[Tensor], num_samples: list[int], chunk_seconds: float = 30.0,
                context_seconds: float = 1.0, bf16: bool = False, crossfade_seconds: float = 0.1) -> list[Tensor]:
    """Waveforms ``(num_samples[i],)``: code sequences that fit one chunk are decoded together as one padded batch
    (``model.decode(ids, lengths)``: each as if alone, to float rounding), longer ones by `decode_long`."""
    device = next(model.parameters()).device
    limit = chunk_seconds * model.sample_rate / model.hop_length if chunk_seconds > 0 else math.inf
    out: list[Tensor | None] = [None] * len(codes)
    short = [i for i, c in enumerate(codes) if c.numel() <= limit]
    for i, ids in enumerate(codes):
        if i not in short:
            out[i] = decode_long(model, ids, num_samples[i], chunk_seconds, context_seconds, bf16, crossfade_seconds)
    if short:
        ids = _padded([torch.as_tensor(codes[i]).long().reshape(-1) for i in short]).to(device)
        with bf16_autocast(device, bf16):
            waves = model.decode(ids, [num_samples[i] for i in short]).float().cpu()
        for row, i in enumerate(short):
            out[i] = waves[row, :num_samples[i]]
    return out  # type: ignore[return-value]


def crossfade_weights(start: int, end: int, rise: tuple[int, int] | None, fall: tuple[int, int] | None) -> Tensor:
    """Weights of samples ``[start, end)``: 1, rising linearly over ``rise = (a, b)`` and falling over ``fall``;
    a rise and the previous chunk's fall over the same span sum to exactly 1 (no gain change at a seam)."""
    n = torch.arange(start, end, dtype=torch.float64)
    weight = torch.ones(end - start, dtype=torch.float64)
    if rise is not None:
        weight = torch.minimum(weight, ((n - rise[0] + 0.5) / (rise[1] - rise[0])).clamp(0, 1))
    if fall is not None:
        weight = torch.minimum(weight, 1 - ((n - fall[0] + 0.5) / (fall[1] - fall[0])).clamp(0, 1))
    return weight.float()


@torch.no_grad()
def decode_long(model: Any, codes: Tensor, num_samples: int | None = None, chunk_seconds: float = 30.0,
                context_seconds: float = 1.0, bf16: bool = False, crossfade_seconds: float = 0.1) -> Tensor:
    """Codes ``(T,)`` -> waveform ``(num_samples or T * hop,)``, decoded in chunks of ``chunk_seconds``.

    Each chunk's window carries ``context_seconds`` of codes on each side beyond its crossfade zone; neighbouring
    chunks overlap by ``crossfade_seconds`` (rounded to whole frames, centred on the seam) and are blended
    linearly there, so a seam is a smooth blend of two near-identical signals, not a jump (the decoder reads the
    whole window through attention and GroupNorm: chunked output is close to, never equal to, a whole decode).
    """
    hop, rate = model.hop_length, model.sample_rate
    device = next(model.parameters()).device
    codes = torch.as_tensor(codes).long().reshape(-1)
    total = codes.numel()
    chunk = max(1, int(chunk_seconds * rate / hop)) if chunk_seconds > 0 else 0
    context = int(math.ceil(context_seconds * rate / hop))
    half = max(0, int(round(crossfade_seconds * rate / hop / 2)))
    if chunk:
        half = min(half, chunk // 2)
    out = torch.zeros(total * hop)
    for keep0, keep1, _, _ in chunk_spans(total, chunk, 0):
        a, e = max(0, keep0 - half), min(total, keep1 + half)  # the frames this chunk writes
        win0, win1 = max(0, a - context), min(total, e + context)
        with bf16_autocast(device, bf16):
            wave = model.decode(codes[win0:win1].to(device)[None])[0].float().cpu()
        rise = ((keep0 - half) * hop, (keep0 + half) * hop) if keep0 > 0 and half else None
        fall = ((keep1 - half) * hop, (keep1 + half) * hop) if keep1 < total and half else None
        piece = wave[(a - win0) * hop: (e - win0) * hop]
        out[a * hop: e * hop] += piece * crossfade_weights(a * hop, e * hop, rise, fall)
    return out[:num_samples] if num_samples else out


def audio_metrics(recon: Tensor, wave: Tensor, rate: int) -> dict[str, float]:
    """Mel and STFT distance, SI-SNR, PESQ-WB and STOI of one reconstruction against its input, rounded."""
    from tokenforge.metrics import audio as M

    out = {"mel_distance": float(M.mel_distance(recon, wave, rate)),
           "stft_distance": float(M.stft_distance(recon, wave)), "si_snr_db": float(M.si_snr(recon, wave))}
    out.update({k: v for k, v in M.pesq_stoi(recon[None], wave[None], rate).items()})
    return {k: round(v, 4) for k, v in out.items()}
