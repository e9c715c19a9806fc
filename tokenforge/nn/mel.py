"""Log-mel spectrogram distance: an audio tokenizer's mel training loss and the audio metrics' mel distance.

`MelSpectrogram` reimplements torchaudio's ``MelSpectrogram`` in the configuration of the Vocos vocoder's loss
(periodic Hann window, ``center=True`` reflect padding, magnitude (power 1), HTK mel scale, no filter-bank
normalisation, f_min 0, f_max sr/2), because the installed torchaudio cannot load its C++ library. Its filter
bank equals the ``melspec_loss.mel_spec.mel_scale.fb`` buffer of the official audio-tokenizer checkpoints
(tested with the audio tokenizer's parity fixture).
"""

from __future__ import annotations

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
