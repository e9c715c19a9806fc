"""WavTokenizer's decoder: the Vocos backbone with the attention "pos_net", and the iSTFT head.

`VocosBackbone`: ``embed`` conv (k7) -> ``pos_net`` (ResnetBlock x2, AttnBlock, ResnetBlock x2, GroupNorm) ->
``norm`` (AdaLayerNorm selected by ``bandwidth_id``, or LayerNorm) -> ConvNeXt blocks with layer scale ->
``final_layer_norm``; ``(B, C_in, T)`` -> ``(B, T, dim)``. Keys are the official ones.

`ISTFTHead`: Linear -> log-magnitude / phase halves -> ``exp`` clipped at 100 -> complex spectrum -> inverse
STFT. ``padding="same"`` is Vocos' own overlap-add (``F.fold``) trimmed by ``(n_fft - hop) / 2`` on each side
and divided by the squared-window envelope, giving exactly ``T * hop`` samples; ``"center"`` is
``torch.istft(center=True)``. The head always runs in float32 (FFTs under bf16 autocast lose the waveform).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.nn.conv1d import AttnBlock1d, ConvNeXt1dBlock, ResnetBlock1d
from tokenforge.nn.norms import AdaLayerNorm


class VocosBackbone(Configurable, nn.Module):
    """Vocos backbone as WavTokenizer uses it (``decoder.models.VocosBackbone``)."""

    def __init__(
        self, input_channels: int = 512, dim: int = 768, intermediate_dim: int = 2304, num_layers: int = 12,
        layer_scale_init_value: float | None = None, adanorm_num_embeddings: int | None = 4,
        num_groups: int = 32, dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.input_channels, self.dim = input_channels, dim
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.adanorm = adanorm_num_embeddings is not None
        self.norm = AdaLayerNorm(adanorm_num_embeddings, dim) if self.adanorm else nn.LayerNorm(dim, eps=1e-6)
        scale = layer_scale_init_value if layer_scale_init_value is not None else 1.0 / num_layers
        self.convnext = nn.ModuleList(
            [ConvNeXt1dBlock(dim, intermediate_dim, scale, adanorm_num_embeddings) for _ in range(num_layers)]
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(_init_weights)  # before pos_net exists: pos_net keeps torch's default init, as the official code
        self.pos_net = nn.Sequential(
            ResnetBlock1d(dim, dropout=dropout, num_groups=num_groups),
            ResnetBlock1d(dim, dropout=dropout, num_groups=num_groups),
            AttnBlock1d(dim, num_groups=num_groups),
            ResnetBlock1d(dim, dropout=dropout, num_groups=num_groups),
            ResnetBlock1d(dim, dropout=dropout, num_groups=num_groups),
            nn.GroupNorm(num_groups, dim, eps=1e-6),
        )

    def forward(self, x: Tensor, bandwidth_id: Tensor | None = None) -> Tensor:
        if self.adanorm and bandwidth_id is None:
            raise ValueError("this backbone uses AdaLayerNorm: pass bandwidth_id (e.g. torch.tensor([0]))")
        x = self.pos_net(self.embed(x)).transpose(1, 2)
        x = self.norm(x, bandwidth_id) if self.adanorm else self.norm(x)
        x = x.transpose(1, 2)
        for block in self.convnext:
            x = block(x, bandwidth_id)
        return self.final_layer_norm(x.transpose(1, 2))

    def forward_lengths(self, x: Tensor, bandwidth_id: Tensor | None, lengths: list[int]) -> Tensor:
        """`forward` on a right-padded batch ``(B, C_in, T)`` where item ``i`` has ``lengths[i]`` frames: each item
        is computed as if alone. Convs see zeros past an item's end (their own zero padding), GroupNorm takes
        its statistics and attention its keys over the item's frames only (both per item); the rest is per
        frame. Frames past an item's end hold zeros."""
        if self.adanorm and bandwidth_id is None:
            raise ValueError("this backbone uses AdaLayerNorm: pass bandwidth_id (e.g. torch.tensor([0]))")
        steps = torch.arange(x.shape[-1], device=x.device)
        mask = (steps[None] < torch.as_tensor(lengths, device=x.device)[:, None])[:, None].to(x.dtype)
        x = self.embed(x * mask) * mask
        for layer in self.pos_net:
            if isinstance(layer, ResnetBlock1d):
                h = layer.conv1(F.silu(_group_norm(layer.norm1, x, lengths)) * mask)
                h = layer.conv2(layer.dropout(F.silu(_group_norm(layer.norm2, h, lengths))) * mask)
                x = ((layer.nin_shortcut(x) if layer.nin_shortcut is not None else x) + h) * mask
            elif isinstance(layer, AttnBlock1d):
                h = _group_norm(layer.norm, x, lengths)
                q, k, v = (proj(h) for proj in (layer.q, layer.k, layer.v))
                att = torch.zeros_like(h)
                for i, n in enumerate(lengths):
                    one = (t[i:i + 1, :, :n].transpose(1, 2)[:, None] for t in (q, k, v))
                    att[i, :, :n] = F.scaled_dot_product_attention(*one)[0, 0].transpose(0, 1)
                x = (x + layer.proj_out(att)) * mask
            elif isinstance(layer, nn.GroupNorm):
                x = _group_norm(layer, x, lengths)
            else:
                raise TypeError(f"forward_lengths: no length rule for {type(layer).__name__}")
        x = x.transpose(1, 2)
        x = (self.norm(x, bandwidth_id) if self.adanorm else self.norm(x)).transpose(1, 2)
        for block in self.convnext:
            x = block(x * mask, bandwidth_id)
        return self.final_layer_norm((x * mask).transpose(1, 2))


def _group_norm(norm: nn.GroupNorm, x: Tensor, lengths: list[int]) -> Tensor:
    """``norm`` applied to each item's first ``lengths[i]`` frames alone (statistics over those only); zeros after."""
    out = torch.zeros_like(x)
    for i, n in enumerate(lengths):
        out[i, :, :n] = norm(x[i:i + 1, :, :n])[0]
    return out


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.constant_(module.bias, 0)


def _fold_args(win_length: int, hop_length: int, frames: int) -> dict:
    size = (frames - 1) * hop_length + win_length
    return dict(output_size=(1, size), kernel_size=(1, win_length), stride=(1, hop_length))


def window_envelope(window: Tensor, hop_length: int, frames: int) -> Tensor:
    """Overlap-added squared window of ``frames`` frames, trimmed like the signal (``same`` padding)."""
    win = window.numel()
    pad, size = (win - hop_length) // 2, (frames - 1) * hop_length + win
    window_sq = window.square().expand(1, frames, -1).transpose(1, 2)
    return F.fold(window_sq, **_fold_args(win, hop_length, frames)).reshape(-1)[pad:size - pad]


class ISTFT(Configurable, nn.Module):
    """Inverse STFT with Vocos' ``same`` padding (or torch's ``center``); buffer ``window`` (periodic Hann)."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int | None = None, padding: str = "same") -> None:
        super().__init__()
        if padding not in ("same", "center"):
            raise ValueError(f"padding must be 'same' or 'center', got {padding!r}")
        self.n_fft, self.hop_length, self.padding = n_fft, hop_length, padding
        self.win_length = win_length or n_fft
        if not 0 < hop_length <= self.win_length // 2:
            raise ValueError(f"hop_length must be in (0, win_length / 2] for overlap-add, got {hop_length} "
                             f"with win_length {self.win_length}")
        self.register_buffer("window", torch.hann_window(self.win_length))
        if padding == "same":  # checked once here (the official code asserts per call: a host sync)
            frames = 2 * (self.win_length // hop_length) + 2
            with torch.device("cpu"):  # also when the module is built on the meta device
                envelope = window_envelope(torch.hann_window(self.win_length), hop_length, frames)
            if not bool((envelope > 1e-11).all()):
                raise ValueError(f"iSTFT window envelope vanishes: hop {hop_length} too large for n_fft {n_fft}")


    def forward(self, spec: Tensor) -> Tensor:
        """Complex ``(B, n_fft/2 + 1, T)`` -> waveform ``(B, T * hop)`` (same) or torch.istft's length (center)."""
        if self.padding == "center":
            return torch.istft(spec, self.n_fft, self.hop_length, self.win_length, self.window, center=True)
        pad = (self.win_length - self.hop_length) // 2
        frames = spec.shape[-1]
        ifft = torch.fft.irfft(spec, self.n_fft, dim=1, norm="backward") * self.window[None, :, None]
        size = (frames - 1) * self.hop_length + self.win_length
        y = F.fold(ifft, **_fold_args(self.win_length, self.hop_length, frames))[:, 0, 0, pad:size - pad]
        return y / window_envelope(self.window, self.hop_length, frames)


class ISTFTHead(Configurable, nn.Module):
    """``(B, T, dim)`` -> waveform ``(B, T * hop_length)``; keys ``out.*`` and ``istft.window``."""

    def __init__(self, dim: int = 768, n_fft: int = 1280, hop_length: int = 320, padding: str = "same") -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft, hop_length, n_fft, padding)

    def spectrum(self, x: Tensor) -> Tensor:
        """The complex spectrum ``(B, n_fft/2 + 1, T)`` the linear layer predicts (computed in float32)."""
        h = self.out(x).float().transpose(1, 2)
        log_mag, phase = h.chunk(2, dim=1)
        mag = torch.exp(log_mag).clip(max=1e2)
        return torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.istft(self.spectrum(x.float()))
