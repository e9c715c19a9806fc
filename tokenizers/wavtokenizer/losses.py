"""WavTokenizer / Vocos training losses: log-mel L1, hinge and least-squares GAN terms, feature matching.

`MelSpectrogram` reimplements torchaudio's ``MelSpectrogram`` as Vocos configures it (periodic Hann window,
``center=True`` reflect padding, magnitude (power 1), HTK mel scale, no filter-bank normalisation,
f_min 0, f_max sr/2), because the installed torchaudio cannot load its C++ library. Its filter bank equals the
``melspec_loss.mel_spec.mel_scale.fb`` buffer of the official checkpoints (tested).

GAN conventions here are Vocos' and DAC's, not `tokenforge.tokenizers.losses.adversarial`'s (which follow
taming): hinge D = mean relu(1 - D(y)) + mean relu(1 + D(y_hat)) without the 0.5, hinge G = mean relu(1 - D(y_hat));
each summed over sub-discriminators and then divided by their number (as the official training step does).
DAC: D = sum of mean D(y_hat)^2 + mean (1 - D(y))^2, G = sum of mean (1 - D(y_hat))^2, feature matching the sum
of L1 over layers and sub-discriminators (not averaged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.config import Configurable


def hz_to_mel(f: Tensor | float) -> Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """HTK triangular filters ``(n_fft // 2 + 1, n_mels)``, unnormalised (torchaudio's ``melscale_fbanks``)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    mels = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2)
    f_pts = mel_to_hz(mels)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


class MelSpectrogram(Configurable, nn.Module):
    """Magnitude mel spectrogram ``(B, L)`` -> ``(B, n_mels, frames)`` (Vocos' loss front end)."""

    def __init__(self, sample_rate: int = 24000, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 100,
                 f_min: float = 0.0, f_max: float | None = None) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = torch.stft(x.float(), self.n_fft, self.hop_length, window=self.window, center=True,
                              pad_mode="reflect", return_complex=True).abs()
            return (spec.transpose(-1, -2) @ self.fb).transpose(-1, -2)


class MelLoss(Configurable, nn.Module):
    """L1 between ``log(clamp(mel, 1e-7))`` of the target and the reconstruction."""

    def __init__(self, sample_rate: int = 24000, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 100) -> None:
        super().__init__()
        self.mel = MelSpectrogram(sample_rate, n_fft, hop_length, n_mels)

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return F.l1_loss(self.mel(y).clamp_min(1e-7).log(), self.mel(y_hat).clamp_min(1e-7).log())


def hinge_d_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    """Vocos ``DiscriminatorLoss`` divided by the number of sub-discriminators."""
    total = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake, strict=True))
    return total / len(real)


def hinge_g_loss(fake: Sequence[Tensor]) -> Tensor:
    """Vocos ``GeneratorLoss`` divided by the number of sub-discriminators."""
    return sum(F.relu(1 - f).mean() for f in fake) / len(fake)


def feature_matching(real: Sequence[Sequence[Tensor]], fake: Sequence[Sequence[Tensor]]) -> Tensor:
    """Vocos ``FeatureMatchingLoss`` (sum of mean |f(y) - f(y_hat)| over layers) / number of sub-discriminators."""
    total = sum(torch.mean(torch.abs(r - f)) for rs, fs in zip(real, fake, strict=True) for r, f in zip(rs, fs))
    return total / len(real)


def lsgan_d_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    """DAC: sum over sub-discriminators of mean D(y_hat)^2 + mean (1 - D(y))^2."""
    return sum(f.pow(2).mean() + (1 - r).pow(2).mean() for r, f in zip(real, fake, strict=True))


def lsgan_g_loss(fake: Sequence[Tensor]) -> Tensor:
    """DAC: sum over sub-discriminators of mean (1 - D(y_hat))^2."""
    return sum((1 - f).pow(2).mean() for f in fake)


def dac_feature_matching(real: Sequence[Sequence[Tensor]], fake: Sequence[Sequence[Tensor]]) -> Tensor:
    """DAC: sum of L1 over every layer of every sub-discriminator (real features detached)."""
    return sum(F.l1_loss(f, r.detach()) for rs, fs in zip(real, fake, strict=True) for r, f in zip(rs, fs))


def cosine_schedule(num_training_steps: int, num_warmup_steps: int = 0):
    """``transformers.get_cosine_schedule_with_warmup``'s factor as a picklable callable; it stays at 0 after
    ``num_training_steps`` (transformers' would rise again)."""
    return _Cosine(num_training_steps, num_warmup_steps)


class _Cosine:
    def __init__(self, total: int, warmup: int) -> None:
        self.total, self.warmup = max(1, int(total)), int(warmup)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
