"""Chunk-exact long audio (issue 21, item 2). The encoder's receptive field is computed from its layers
(`tokenforge.receptive_field`) and checked against an impulse response; chunks with that context (plus the
LSTM's measured warm-up) give the whole file's codes; chunked decoding with a crossfade has no seam worse than
the decoder's own window dependence, and no clicks. Figures: docs/methods/wavtokenizer.md."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from audio_tokenizers import HOP, model, speech  # noqa: F401 (model: a fixture)

from tokenforge.audio_files import chunk_spans, decode_long, encode_long, encoder_context
from tokenforge.receptive_field import ReceptiveField, receptive_field
from tokenforge.tokenizers.wavtokenizer.seanet import SEANetEncoder

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def wave(shared_data: Path) -> torch.Tensor:
    return torch.cat(speech(shared_data, 8))[: 20 * 24000]  # 20 s of real speech


def test_receptive_field_of_the_seanet_encoder() -> None:
    # by hand: k7 conv (3, 3); per ratio r (2, 4, 5, 8): residual k3 (1, 1) then the k=2r stride-r conv
    # (r - r // 2, 2r - 1 - (r - r // 2)); LSTM; k7 conv (3, 3) at stride 320
    paper = receptive_field(SEANetEncoder().model)
    assert paper == ReceptiveField(1203, 1514, 320, "causal")
    assert receptive_field(SEANetEncoder(lstm=0).model) == ReceptiveField(1203, 1514, 320, None)
    assert paper.context_frames() == (4, 4)


@torch.no_grad()
def test_receptive_field_equals_the_impulse_response(wave: torch.Tensor) -> None:
    torch.manual_seed(0)
    encoder = SEANetEncoder(dimension=16, n_filters=4, lstm=0, init="variance_preserving").eval()
    field = receptive_field(encoder.model)
    x = wave[24000: 24000 + 40 * HOP].clone()
    base = encoder(x[None, None])[0]
    for p in (5000, 6400, 7039):
        y = x.clone()
        y[p] += 0.5
        changed = (encoder(y[None, None])[0] != base).any(0).nonzero().flatten().tolist()
        expected = [t for t in range(base.shape[-1]) if t * HOP - field.left <= p <= t * HOP + field.right]
        assert changed == expected


@torch.no_grad()
def _chunked_latents(model, wave: torch.Tensor, chunk: int, left: int, right: int) -> torch.Tensor:
    frames = math.ceil(wave.numel() / HOP)
    out = torch.empty(model.quantizer.dim, frames)
    for keep0, keep1, win0, win1 in chunk_spans(frames, chunk, left, right):
        out[:, keep0:keep1] = model.encoder(wave[win0 * HOP: win1 * HOP][None, None])[0][:, keep0 - win0: keep1 - win0]
    return out


def test_chunked_codes_equal_whole_file(model, wave: torch.Tensor) -> None:
    whole = encode_long(model, wave, chunk_seconds=0)
    for chunk_seconds in (1.0, 2.5):
        assert torch.equal(encode_long(model, wave, chunk_seconds=chunk_seconds), whole)
    assert len(set(whole.tolist())) > 50


@torch.no_grad()
def test_context_is_what_the_architecture_needs(model, wave: torch.Tensor) -> None:
    """Latents: the derived context gives the whole file's to float rounding; one right frame less, or no LSTM
    warm-up, does not (measured: 0.35 and 0.05 max difference against 8e-7, latent RMS 0.33)."""
    whole = model.encoder(wave[None, None])[0]
    left, right = encoder_context(model)
    convs_left, _ = encoder_context(model, warmup_seconds=0.0)
    assert (left, right) == (4 + 75, 4)
    diff = {name: float((_chunked_latents(model, wave, 75, lf, rt) - whole).abs().max())
            for name, (lf, rt) in {"derived": (left, right), "right - 1": (left, right - 1),
                                   "no warm-up": (convs_left, right)}.items()}
    assert diff["derived"] < 1e-5
    assert diff["right - 1"] > 1e-2 and diff["no warm-up"] > 1e-3


def test_chunks_hold_bounded_windows(model, wave: torch.Tensor) -> None:
    """Memory: every model call sees one chunk plus its context, whatever the file's length."""
    seen: list[int] = []
    encode = model.encode

    class Spy:
        hop_length, sample_rate = model.hop_length, model.sample_rate
        recurrent_warmup_seconds = model.recurrent_warmup_seconds

        def receptive_field(self):
            return model.receptive_field()

        def parameters(self):
            return model.parameters()

        def encode(self, x):
            seen.append(x.shape[-1])
            return encode(x)

        def decode(self, ids):
            seen.append(ids.shape[-1] * HOP)
            return model.decode(ids)

    codes = encode_long(Spy(), wave, chunk_seconds=2.0)
    assert max(seen) == (150 + 79 + 4) * HOP
    seen.clear()
    decode_long(Spy(), codes, wave.numel(), chunk_seconds=2.0, context_seconds=1.0, crossfade_seconds=0.1)
    assert max(seen) == (150 + 2 * (75 + 4)) * HOP


def test_chunked_decode_has_no_seams(model, wave: torch.Tensor) -> None:
    """The decoder attends over its whole window (and GroupNorm takes window statistics), so a chunked decode
    differs from a whole decode everywhere; a seam must not be worse than that, nor jump."""
    wave = wave[: 10 * 24000]
    codes = encode_long(model, wave, chunk_seconds=0)
    whole = decode_long(model, codes, wave.numel(), chunk_seconds=0)
    seams = [150 * HOP * k for k in range(1, math.ceil(codes.numel() / 150))]
    near = torch.zeros(whole.numel(), dtype=torch.bool)
    for s in seams:
        near[s - 240: s + 240] = True  # +-10 ms

    def errors(context: float, crossfade: float) -> tuple[float, float, float]:
        out = decode_long(model, codes, wave.numel(), chunk_seconds=2.0, context_seconds=context,
                          crossfade_seconds=crossfade)
        err = (out - whole).abs()
        step = max(float((out[s] - out[s - 1]).abs()) for s in seams)
        return float(err[near].max()), float(err[~near].max()), step

    seam, elsewhere, step = errors(1.0, 0.1)
    assert seam < elsewhere  # measured 1.6e-2 vs 3.5e-2 (20 s)
    assert step < float(whole.diff().abs().max())  # no sample jump the whole decode does not have
    hard_cut, _, _ = errors(0.0, 0.0)
    assert seam < 0.5 * hard_cut  # context + crossfade: measured 1.6e-2 vs 1.1e-1 without
