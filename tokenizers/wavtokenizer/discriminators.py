"""WavTokenizer's three discriminators (training only), with the official key layouts.

- `MultiPeriodDiscriminator` (HiFi-GAN via Vocos): periods 2, 3, 5, 7, 11; the waveform is reflect-padded to a
  multiple of the period and folded to ``(B, 1, T/p, p)``; five weight-normed (5, 1) convs + post conv.
- `MultiResolutionDiscriminator` (Vocos): magnitude STFTs (rectangular window, ``center=True``) at three
  resolutions, five 64-channel 2-D convs + post conv.
  Both take ``bandwidth_id``: a zero-initialised embedding row dotted with the last hidden map is added to the
  logits (Vocos' conditional discriminators); as the official in-place ``x += h``, the last feature map (used
  by feature matching) is the conditioned logits.
- `DACDiscriminator` (Descript Audio Codec, unconditional): DC removal and peak normalisation to 0.8, then
  five period discriminators and three complex multi-band STFT discriminators (windows 2048/1024/512, hop
  window/4, rectangular window, real/imag as 2 channels, 5 bands).

Each ``forward`` returns ``(logits, feature_maps)`` per sub-discriminator. Weight norm is
``parametrizations.weight_norm``; official checkpoints' legacy keys convert with `convert_weight_norm_keys`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from tokenforge.config import Configurable

Output = tuple[list[Tensor], list[list[Tensor]]]
PERIOD_WIDTHS = (32, 128, 512, 1024, 1024)  # official; smaller widths make CPU-sized discriminators


def _conditioned(emb: nn.Embedding | None, h: Tensor, cond: Tensor | None) -> Tensor | float:
    if emb is None or cond is None:
        return 0.0
    e = emb(torch.as_tensor(cond, device=h.device).reshape(-1))[:, :, None, None]
    return (e * h).sum(dim=1, keepdim=True)


def rectangular(length: int, like: Tensor) -> Tensor:
    """The rectangular STFT window the official discriminators use (``window=None``), passed explicitly: the same
    numbers, without torch's spectral-leakage warning on every call."""
    return torch.ones(length, device=like.device, dtype=torch.float32)


class PeriodDiscriminator(nn.Module):
    """One HiFi-GAN period discriminator (Vocos ``DiscriminatorP``); feature maps after convs 1..4 and post."""

    def __init__(self, period: int, num_embeddings: int | None = None, lrelu_slope: float = 0.1,
                 widths: Sequence[int] = PERIOD_WIDTHS) -> None:
        super().__init__()
        self.period, self.lrelu_slope = period, lrelu_slope
        w = [1, *widths]
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(w[i], w[i + 1], (5, 1), (3 if i < len(widths) - 1 else 1, 1), padding=(2, 0)))
            for i in range(len(widths))
        ])
        self.emb = nn.Embedding(num_embeddings, w[-1]) if num_embeddings else None
        if self.emb is not None:
            nn.init.zeros_(self.emb.weight)
        self.conv_post = weight_norm(nn.Conv2d(w[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        x = x[:, None]
        if x.shape[-1] % self.period:
            x = F.pad(x, (0, self.period - x.shape[-1] % self.period), "reflect")
        x = x.reshape(x.shape[0], 1, -1, self.period)
        fmap = []
        for i, conv in enumerate(self.convs):
            x = F.leaky_relu(conv(x), self.lrelu_slope)
            if i > 0:
                fmap.append(x)
        x = self.conv_post(x) + _conditioned(self.emb, x, cond)
        fmap.append(x)
        return x, fmap


class ResolutionDiscriminator(nn.Module):
    """One Vocos ``DiscriminatorR`` on a magnitude spectrogram ``(B, 1, freq, time)``."""

    def __init__(self, resolution: Sequence[int], channels: int = 64, num_embeddings: int | None = None,
                 lrelu_slope: float = 0.1) -> None:
        super().__init__()
        self.resolution, self.lrelu_slope = tuple(resolution), lrelu_slope
        specs = [((7, 5), (2, 2), (3, 2)), ((5, 3), (2, 1), (2, 1)), ((5, 3), (2, 2), (2, 1)), (3, (2, 1), 1),
                 (3, (2, 2), 1)]
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1 if i == 0 else channels, channels, k, s, padding=p))
            for i, (k, s, p) in enumerate(specs)
        ])
        self.emb = nn.Embedding(num_embeddings, channels) if num_embeddings else None
        if self.emb is not None:
            nn.init.zeros_(self.emb.weight)
        self.conv_post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        n_fft, hop, win = self.resolution
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = torch.stft(x.float(), n_fft, hop, win, window=rectangular(win, x), center=True,
                           return_complex=True).abs()
        x = x[:, None]
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.lrelu_slope)
            fmap.append(x)
        x = self.conv_post(x) + _conditioned(self.emb, x, cond)
        fmap.append(x)
        return x, fmap


class MultiPeriodDiscriminator(Configurable, nn.Module):
    """Vocos ``MultiPeriodDiscriminator``; keys ``discriminators.{i}.convs.{j}``, ``.emb``, ``.conv_post``."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), num_embeddings: int | None = 4,
                 widths: Sequence[int] = PERIOD_WIDTHS) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([PeriodDiscriminator(p, num_embeddings, widths=widths) for p in periods])

    def forward(self, x: Tensor, bandwidth_id: Tensor | None = None) -> Output:
        outs = [d(x, bandwidth_id) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


class MultiResolutionDiscriminator(Configurable, nn.Module):
    """Vocos ``MultiResolutionDiscriminator`` over (n_fft, hop, win) resolutions."""

    def __init__(self, resolutions: Sequence[Sequence[int]] = ((1024, 256, 1024), (2048, 512, 2048), (512, 128, 512)),
                 channels: int = 64, num_embeddings: int | None = 4) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([ResolutionDiscriminator(r, channels, num_embeddings) for r in resolutions])

    def forward(self, x: Tensor, bandwidth_id: Tensor | None = None) -> Output:
        outs = [d(x, bandwidth_id) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


def _wn_conv(c_in: int, c_out: int, kernel: Sequence[int] | int, stride: Sequence[int] | int = 1,
             padding: Sequence[int] | int = 0, act: bool = True) -> nn.Module:
    conv = weight_norm(nn.Conv2d(c_in, c_out, kernel, stride, padding=padding))
    return nn.Sequential(conv, nn.LeakyReLU(0.1)) if act else conv


class DACPeriod(nn.Module):
    """DAC ``MPD``: always pads ``period - L % period`` samples (a full period when L divides), as DAC."""

    def __init__(self, period: int, widths: Sequence[int] = PERIOD_WIDTHS) -> None:
        super().__init__()
        self.period = period
        w = [1, *widths]
        self.convs = nn.ModuleList([_wn_conv(w[i], w[i + 1], (5, 1), (3 if i < len(widths) - 1 else 1, 1), (2, 0))
                                    for i in range(len(widths))])
        self.conv_post = _wn_conv(w[-1], 1, (3, 1), 1, (1, 0), act=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.pad(x, (0, self.period - x.shape[-1] % self.period), mode="reflect")
        x = x.reshape(x.shape[0], x.shape[1], -1, self.period)
        fmap = []
        for layer in self.convs:
            x = layer(x)
            fmap.append(x)
        fmap.append(self.conv_post(x))
        return fmap


DAC_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


class DACResolution(nn.Module):
    """DAC ``MRD``: complex STFT (real/imag channels, layout (B, 2, time, freq)) split into frequency bands."""

    def __init__(self, window_length: int, hop_factor: float = 0.25, bands: Sequence[Sequence[float]] = DAC_BANDS,
                 channels: int = 32) -> None:
        super().__init__()
        self.window_length, self.hop_length = window_length, int(window_length * hop_factor)
        n_bins = window_length // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]
        ch = channels

        def stack() -> nn.ModuleList:
            return nn.ModuleList([_wn_conv(2, ch, (3, 9), (1, 1), (1, 4)), _wn_conv(ch, ch, (3, 9), (1, 2), (1, 4)),
                                  _wn_conv(ch, ch, (3, 9), (1, 2), (1, 4)), _wn_conv(ch, ch, (3, 9), (1, 2), (1, 4)),
                                  _wn_conv(ch, ch, (3, 3), (1, 1), (1, 1))])

        self.band_convs = nn.ModuleList([stack() for _ in self.bands])
        self.conv_post = _wn_conv(ch, 1, (3, 3), (1, 1), (1, 1), act=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = torch.stft(x[:, 0].float(), self.window_length, self.hop_length,
                              window=rectangular(self.window_length, x), center=True, return_complex=True)
        spec = torch.view_as_real(spec).permute(0, 3, 2, 1)  # (B, 2, time, freq)
        fmap, outs = [], []
        for (lo, hi), stack in zip(self.bands, self.band_convs):
            band = spec[..., lo:hi]
            for layer in stack:
                band = layer(band)
                fmap.append(band)
            outs.append(band)
        fmap.append(self.conv_post(torch.cat(outs, dim=-1)))
        return fmap


class DACDiscriminator(Configurable, nn.Module):
    """DAC's discriminator (no multi-scale part); keys ``discriminators.{i}...`` as WavTokenizer's ``dac``."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), fft_sizes: Sequence[int] = (2048, 1024, 512),
                 bands: Sequence[Sequence[float]] = DAC_BANDS, widths: Sequence[int] = PERIOD_WIDTHS,
                 band_channels: int = 32) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([*(DACPeriod(p, widths) for p in periods),
                                             *(DACResolution(f, bands=bands, channels=band_channels)
                                               for f in fft_sizes)])

    @staticmethod
    def preprocess(y: Tensor) -> Tensor:
        y = y - y.mean(dim=-1, keepdim=True)
        return 0.8 * y / (y.abs().max(dim=-1, keepdim=True)[0] + 1e-9)

    def forward(self, x: Tensor, bandwidth_id: Tensor | None = None) -> Output:
        """``bandwidth_id`` is accepted and ignored (unconditional), so all three share one call signature."""
        x = self.preprocess(x[:, None])
        fmaps = [d(x) for d in self.discriminators]
        return [f[-1] for f in fmaps], [f[:-1] for f in fmaps]
