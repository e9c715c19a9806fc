#!/usr/bin/env python
"""How good must a reconstruction be before PESQ moves? Metrics of controlled degradations of real clips.

A short WavTokenizer run lowers the held-out mel distance long before PESQ leaves its floor (about 1.03).
This table calibrates the two against each other on the same clips the training curve uses: the true STFT
magnitude with a random phase (the best a decoder with no phase model can do), Griffin-Lim from the true
magnitude, a 100-band mel spectrogram inverted by least squares, log-magnitude noise and spectral blur with the
true phase. It needs the ``pesq`` and ``pystoi`` packages.

    python tools/audio_oracles.py ../shared/data/speech24k --clips 8 --seconds 4
"""

from __future__ import annotations

import argparse
import math
import warnings

import torch
import torchaudio
from torch import Tensor

from tokenforge.metrics import audio as M
from tokenforge.tokenizers.wavtokenizer.curve import held_out_clips

N_FFT, HOP = 1280, 320  # WavTokenizer's 75 tokens/s ISTFT head


def degradations(x: Tensor, sample_rate: int, seed: int = 0) -> dict[str, Tensor]:
    """Name -> degraded copy of ``x`` ``(N, L)``; each keeps one part of the signal exact and spoils another."""
    g = torch.Generator().manual_seed(seed)
    window = torch.hann_window(N_FFT)
    spec = torch.stft(x, N_FFT, HOP, window=window, return_complex=True)
    mag, phase = spec.abs(), spec.angle()

    def istft(s: Tensor) -> Tensor:
        return torch.istft(s, N_FFT, HOP, window=window, length=x.shape[-1])

    def griffin_lim(magnitude: Tensor, iters: int) -> Tensor:
        return torchaudio.transforms.GriffinLim(N_FFT, hop_length=HOP, power=1, n_iter=iters)(magnitude)

    out = {"clean": x,
           "true magnitude, random phase": istft(torch.polar(mag, 2 * math.pi * torch.rand(mag.shape, generator=g)))}
    for iters in (8, 32):
        out[f"true magnitude, Griffin-Lim {iters} iterations"] = griffin_lim(mag, iters)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=N_FFT, hop_length=HOP, n_mels=100, power=1)
    inverse = torchaudio.transforms.InverseMelScale(N_FFT // 2 + 1, 100, sample_rate)
    out["100-band mel, least squares + Griffin-Lim 32"] = griffin_lim(inverse(mel(x)).clamp_min(0), 32)
    for sigma in (0.3, 0.6, 1.0):
        noise = torch.randn(mag.shape, generator=g)
        noisy = torch.polar(mag * torch.exp(sigma * noise), phase)
        out[f"true phase, log-magnitude noise sigma {sigma}"] = istft(noisy)
    for bins in (3, 9):
        rows = mag.transpose(1, 2).reshape(-1, 1, mag.shape[1])
        blurred = torch.nn.functional.avg_pool1d(rows, bins, 1, bins // 2, count_include_pad=False)
        blurred = blurred.reshape(mag.shape[0], mag.shape[2], -1).transpose(1, 2)
        out[f"true phase, magnitude blurred over {bins} bins"] = istft(torch.polar(blurred, phase))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio", help="folder of held-out audio files (the first --clips files, sorted, are used)")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--sample-rate", type=int, default=24000)
    args = ap.parse_args()
    _, x = held_out_clips(args.audio, args.sample_rate, args.clips, args.seconds)
    print("| degradation | mel distance | STOI | PESQ (wb) |\n|---|---:|---:|---:|")
    for name, y in degradations(x, args.sample_rate).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = M.pesq_stoi(y, x, args.sample_rate)
        mel = float(M.mel_distance(y, x, args.sample_rate))
        print(f"| {name} | {mel:.3f} | {scores.get('stoi', math.nan):.3f} | {scores.get('pesq', math.nan):.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
