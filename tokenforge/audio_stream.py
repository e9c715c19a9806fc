"""Streaming audio tokenization: audio pieces of any size in, codes out as soon as they are final; codes in,
audio out likewise. Built on the chunked paths of `tokenforge.audio_files`, with the same windows, so a stream
gives exactly what `encode_long` / `decode_long` give for the whole input (tests/test_audio_streaming.py).

    for codes in tokenizer.stream_encode(pieces):        # pieces: 1-D waveforms at the tokenizer's rate
        ...
    for audio in tokenizer.stream_decode(code_pieces):   # code pieces: 1-D LongTensors
        ...

Latency (algorithmic, before any compute time): encoding emits chunk ``k`` once the audio reaches its end plus
the right context the encoder's receptive field needs (`tokenforge.audio_files.encoder_context`): a frame
waits at most ``chunk + right context`` (``lookahead_seconds``: the right context alone). Decoding emits audio
up to a chunk's end less half the crossfade once codes reach its end plus half the crossfade plus the decode
context. `AudioStreaming` gives a tokenizer both methods; any audio tokenizer that implements the
`tokenforge.audio_files` contract can inherit it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from tokenforge.audio_files import bf16_autocast, crossfade_weights, encoder_context


def lookahead_seconds(model: Any, warmup_seconds: float | None = None) -> float:
    """Audio an encoded frame waits for after its own end: the right context, in whole frames."""
    return encoder_context(model, warmup_seconds)[1] * model.hop_length / model.sample_rate


class StreamEncoder:
    """Push audio, get the codes that are final (`encode_long`'s windows: chunks of ``chunk_seconds``)."""

    def __init__(self, model: Any, chunk_seconds: float = 1.0, warmup_seconds: float | None = None,
                 bf16: bool = False) -> None:
        self.model, self.bf16 = model, bf16
        self.hop = model.hop_length
        self.chunk = max(1, int(chunk_seconds * model.sample_rate / self.hop))
        self.left, self.right = encoder_context(model, warmup_seconds)
        self.buffer = torch.zeros(0)
        self.offset = 0  # sample index of buffer[0]
        self.next = 0  # first frame of the next chunk to emit
        self.device = next(model.parameters()).device

    @property
    def received(self) -> int:
        return self.offset + self.buffer.numel()

    @torch.no_grad()
    def _emit(self, total_frames: int | None) -> Tensor:
        start = self.next
        end = start + self.chunk if total_frames is None else min(start + self.chunk, total_frames)
        win0 = max(0, start - self.left)
        win1 = end + self.right if total_frames is None else min(total_frames, end + self.right)
        if total_frames is not None and start == 0 and total_frames <= self.chunk:
            win1 = total_frames  # encode_long: a file of one chunk is encoded whole
        piece = self.buffer[win0 * self.hop - self.offset: win1 * self.hop - self.offset].to(self.device)[None]
        with bf16_autocast(self.device, self.bf16):
            ids = self.model.encode(piece).ids[0].cpu()
        self.next = end
        keep = max(0, (self.next - self.left) * self.hop - self.offset)  # what the next window still reads
        self.buffer, self.offset = self.buffer[keep:], self.offset + keep
        return ids[start - win0: end - win0]

    def push(self, audio: Tensor) -> Iterator[Tensor]:
        """Add samples; yield the codes of every chunk whose window is complete."""
        self.buffer = torch.cat([self.buffer, torch.as_tensor(audio, dtype=torch.float32).reshape(-1).cpu()])
        while self.received >= (self.next + self.chunk + self.right) * self.hop:
            yield self._emit(None)

    def flush(self) -> Iterator[Tensor]:
        """End of input: yield the remaining codes (the last, partial frame included)."""
        total = math.ceil(self.received / self.hop)
        while self.next < total:
            yield self._emit(total)


class StreamDecoder:
    """Push codes, get the audio that is final (`decode_long`'s windows and crossfade)."""

    def __init__(self, model: Any, chunk_seconds: float = 1.0, context_seconds: float = 0.25,
                 crossfade_seconds: float = 0.1, bf16: bool = False) -> None:
        self.model, self.bf16 = model, bf16
        self.hop, rate = model.hop_length, model.sample_rate
        self.chunk = max(1, int(chunk_seconds * rate / self.hop))
        self.context = int(math.ceil(context_seconds * rate / self.hop))
        self.half = min(max(0, int(round(crossfade_seconds * rate / self.hop / 2))), self.chunk // 2)
        self.codes = torch.zeros(0, dtype=torch.long)
        self.offset = 0  # frame index of codes[0]
        self.next = 0  # first frame of the next chunk
        self.pending = torch.zeros(0)  # blended samples not yet final, starting at sample `emitted`
        self.emitted = 0
        self.device = next(model.parameters()).device

    @property
    def received(self) -> int:
        return self.offset + self.codes.numel()

    @torch.no_grad()
    def _emit(self, total: int | None) -> Tensor:
        keep0 = self.next
        keep1 = keep0 + self.chunk if total is None else min(keep0 + self.chunk, total)
        last = total is not None and keep1 >= total
        if total is not None and keep0 == 0 and total <= self.chunk:
            a, e = 0, total
        else:
            a = max(0, keep0 - self.half)
            e = keep1 + self.half if total is None else min(total, keep1 + self.half)
        win0 = max(0, a - self.context)
        win1 = e + self.context if total is None else min(total, e + self.context)
        ids = self.codes[win0 - self.offset: win1 - self.offset].to(self.device)[None]
        with bf16_autocast(self.device, self.bf16):
            wave = self.model.decode(ids)[0].float().cpu()
        rise = ((keep0 - self.half) * self.hop, (keep0 + self.half) * self.hop) if keep0 > 0 and self.half else None
        fall = None if last or not self.half else ((keep1 - self.half) * self.hop, (keep1 + self.half) * self.hop)
        piece = wave[(a - win0) * self.hop: (e - win0) * self.hop] * crossfade_weights(a * self.hop, e * self.hop,
                                                                                        rise, fall)
        grown = torch.zeros(e * self.hop - self.emitted)
        grown[:self.pending.numel()] = self.pending
        grown[a * self.hop - self.emitted:] += piece
        final = e * self.hop if last else (keep1 - self.half) * self.hop
        out, self.pending = grown[:final - self.emitted], grown[final - self.emitted:]
        self.emitted, self.next = final, keep1
        drop = max(0, self.next - self.half - self.context - self.offset)  # codes no later window reads
        self.codes, self.offset = self.codes[drop:], self.offset + drop
        return out

    def push(self, codes: Tensor) -> Iterator[Tensor]:
        """Add codes; yield the audio that no later chunk changes."""
        self.codes = torch.cat([self.codes, torch.as_tensor(codes).long().reshape(-1).cpu()])
        while self.received >= self.next + self.chunk + self.half + self.context:
            yield self._emit(None)

    def flush(self) -> Iterator[Tensor]:
        """End of codes: yield the rest (``frames * hop`` samples in all; trim to the source length yourself)."""
        total = self.received
        while self.next < total:
            yield self._emit(total)


def stream_encode(model: Any, pieces: Iterable[Tensor], chunk_seconds: float = 1.0,
                  warmup_seconds: float | None = None, bf16: bool = False) -> Iterator[Tensor]:
    """Codes of a stream of audio pieces, chunk by chunk (equal to `encode_long` with the same chunk)."""
    encoder = StreamEncoder(model, chunk_seconds, warmup_seconds, bf16)
    for piece in pieces:
        yield from encoder.push(piece)
    yield from encoder.flush()


def stream_decode(model: Any, code_pieces: Iterable[Tensor], chunk_seconds: float = 1.0,
                  context_seconds: float = 0.25, crossfade_seconds: float = 0.1,
                  bf16: bool = False) -> Iterator[Tensor]:
    """Audio of a stream of codes, piece by piece (equal to `decode_long` with the same settings)."""
    decoder = StreamDecoder(model, chunk_seconds, context_seconds, crossfade_seconds, bf16)
    for codes in code_pieces:
        yield from decoder.push(codes)
    yield from decoder.flush()


class AudioStreaming:
    """``stream_encode`` / ``stream_decode`` methods for an audio tokenizer (see the module docstring)."""

    def stream_encode(self, pieces: Iterable[Tensor], chunk_seconds: float = 1.0,
                      warmup_seconds: float | None = None, bf16: bool = False) -> Iterator[Tensor]:
        return stream_encode(self, pieces, chunk_seconds, warmup_seconds, bf16)

    def stream_decode(self, code_pieces: Iterable[Tensor], chunk_seconds: float = 1.0, context_seconds: float = 0.25,
                      crossfade_seconds: float = 0.1, bf16: bool = False) -> Iterator[Tensor]:
        return stream_decode(self, code_pieces, chunk_seconds, context_seconds, crossfade_seconds, bf16)
