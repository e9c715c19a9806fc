"""Streaming audio tokenization (issue 21, item 3): `stream_encode` / `stream_decode` on real speech fed in
pieces of any size give exactly the chunk-exact results (`encode_long` / `decode_long` with the same chunks),
and the algorithmic latency is the one the receptive field states (measured by feeding one frame at a time)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from audio_tokenizers import HOP, model, speech  # noqa: F401 (model: a fixture)

from tokenforge.audio_files import decode_long, encode_long
from tokenforge.audio_stream import StreamDecoder, StreamEncoder, lookahead_seconds

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def wave(shared_data: Path) -> torch.Tensor:
    return torch.cat(speech(shared_data, 4, first=10))[: 6 * 24000 + 123]  # 6 s, a partial last frame


@pytest.mark.parametrize("piece", [777, 24000 * 60])  # odd pieces; everything at once
def test_streamed_codes_equal_chunk_exact(model, wave: torch.Tensor, piece: int) -> None:
    streamed = torch.cat(list(model.stream_encode(wave.split(piece), chunk_seconds=0.5)))
    assert torch.equal(streamed, encode_long(model, wave, chunk_seconds=0.5))
    assert torch.equal(streamed, encode_long(model, wave, chunk_seconds=0))  # = whole file (item 2)


def test_streamed_audio_equals_chunked_decode(model, wave: torch.Tensor) -> None:
    codes = encode_long(model, wave, chunk_seconds=0)
    streamed = torch.cat(list(model.stream_decode(codes.split(7), chunk_seconds=0.5, context_seconds=0.25,
                                                  crossfade_seconds=0.1)))
    expected = decode_long(model, codes, chunk_seconds=0.5, context_seconds=0.25, crossfade_seconds=0.1)
    assert streamed.shape == (codes.numel() * HOP,) and torch.equal(streamed, expected)


def test_encoder_latency_is_the_right_context(model, wave: torch.Tensor) -> None:
    """Fed one frame of audio at a time, every chunk comes out as soon as its last frame plus 4 frames of
    lookahead (53.3 ms at 24 kHz: the receptive field reaches 1514 samples past a frame's start) have arrived."""
    assert lookahead_seconds(model) == pytest.approx(4 * HOP / 24000)
    encoder = StreamEncoder(model, chunk_seconds=0.2)  # 15 frames
    waits = []
    for piece in wave.split(HOP):
        for codes in encoder.push(piece):
            last_frame_end = encoder.next * HOP  # the chunk just emitted ends here
            waits.append((encoder.received - last_frame_end) / 24000)
            assert codes.numel() == 15
    assert len(waits) > 20 and max(waits) == min(waits) == pytest.approx(lookahead_seconds(model))


def test_decoder_latency(model, wave: torch.Tensor) -> None:
    """Audio up to a chunk's end less half the crossfade is out once codes reach its end plus half the
    crossfade plus the context: 0.05 + 0.25 s here."""
    codes = encode_long(model, wave, chunk_seconds=0)
    decoder = StreamDecoder(model, chunk_seconds=0.5, context_seconds=0.25, crossfade_seconds=0.1)
    waits = []
    for piece in codes.split(1):
        for audio in decoder.push(piece):
            assert audio.numel() > 0
            waits.append((decoder.received * HOP - decoder.emitted) / 24000)
    assert waits and max(waits) == pytest.approx((4 + 19 + 4) * HOP / 24000)  # 2 x half crossfade + context
