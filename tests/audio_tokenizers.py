"""Helpers of the audio tokenizer tests (batched, chunk-exact, streaming): a tiny random-init WavTokenizer whose
codebook is drawn from real speech latents (so codes have real gaps, as a trained codebook; an untrained
k-means codebook is all zeros and every frame would tie), and real speech from ``../shared/data/speech24k``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokenforge.audio_files import load_audio
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.wavtokenizer.model import WavTokenizer
from tokenforge.tokenizers.wavtokenizer.seanet import SEANetEncoder
from tokenforge.tokenizers.wavtokenizer.vocos import ISTFTHead, VocosBackbone


def speech(shared_data: Path, count: int, first: int = 0) -> list[torch.Tensor]:
    """``count`` bundled speech clips (24 kHz mono), sorted by name from ``first``."""
    files = sorted((shared_data / "speech24k").glob("*.flac"))[first:first + count]
    return [load_audio(path, 24000)[0] for path in files]


def tiny_wavtokenizer(shared_data: Path, seed: int = 0) -> WavTokenizer:
    """tiny.yaml's sizes, random weights (the encoder variance-preserving: with the default init its latent hardly
    depends on the audio, so every frame is near a tie); the 256 codes are latent frames of real speech."""
    torch.manual_seed(seed)
    model = WavTokenizer(
        encoder=SEANetEncoder(dimension=32, n_filters=4, lstm=1, init="variance_preserving"),
        quantizer=VectorQuantizer(codebook_size=256, dim=32, ema=True, kmeans_init=True, beta=1.0),
        backbone=VocosBackbone(input_channels=32, dim=64, intermediate_dim=128, num_layers=2),
        head=ISTFTHead(64, n_fft=1280, hop_length=320), seanet_decoder=False).eval()
    with torch.no_grad():
        latent = model.encoder(torch.cat(speech(shared_data, 4, first=40))[None, None])[0].T
        rows = latent[torch.randperm(latent.shape[0])[:256]]
        model.quantizer.embedding.weight.copy_(rows)
    return model


HOP = 320  # tiny_wavtokenizer's samples per frame


@pytest.fixture(scope="module")
def model(shared_data: Path) -> WavTokenizer:
    """The tiny WavTokenizer of these tests, built once per test module (import it to use it)."""
    return tiny_wavtokenizer(shared_data)
