"""EnCodec's SEANet encoder (WavTokenizer's front end) and the SEANet decoder its checkpoints carry.

Built from `tokenforge.nn.conv1d` blocks in the official ``nn.Sequential`` index layout (``model.{i}``), so
official keys load with one rename (EnCodec's extra ``.conv``/``.convtr`` level) plus the legacy weight-norm
key conversion. Every size EnCodec's ``EncodecFeatures`` hard-codes (``n_filters``, ``dimension``, ``lstm``,
...) is an argument here. ``ratios`` are listed decoder-order as in EnCodec: the encoder applies them reversed.

The decoder is never called by WavTokenizer (the Vocos backbone + iSTFT head decode); it exists so released
checkpoints load strictly and is excluded from training when ``WavTokenizer(seanet_decoder=False)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.nn.conv1d import SLSTM, Conv1d, ConvTranspose1d, SEANetResBlock


def _check_activation(activation: str) -> None:
    if activation != "ELU":
        raise ValueError(f"only activation='ELU' (EnCodec's and WavTokenizer's) is supported, got {activation!r}")


class SEANetEncoder(Configurable, nn.Module):
    """Waveform ``(B, 1, L)`` -> latent ``(B, dimension, ceil(L / prod(ratios)))``."""

    def __init__(
        self, channels: int = 1, dimension: int = 512, n_filters: int = 32, n_residual_layers: int = 1,
        ratios: Sequence[int] = (8, 5, 4, 2), activation: str = "ELU", elu_alpha: float = 1.0, kernel_size: int = 7,
        residual_kernel_size: int = 3, last_kernel_size: int = 7, dilation_base: int = 2, causal: bool = False,
        pad_mode: str = "reflect", true_skip: bool = False, compress: int = 2, lstm: int = 2,
        norm: str = "weight_norm",
    ) -> None:
        super().__init__()
        _check_activation(activation)
        self.hop_length = 1
        for r in ratios:
            self.hop_length *= int(r)
        conv = dict(causal=causal, norm=norm, pad_mode=pad_mode)
        layers: list[nn.Module] = [Conv1d(channels, n_filters, kernel_size, **conv)]
        width = n_filters
        for ratio in reversed(list(ratios)):
            for j in range(n_residual_layers):
                layers.append(SEANetResBlock(width, kernel_sizes=(residual_kernel_size, 1),
                                             dilations=(dilation_base ** j, 1), compress=compress,
                                             true_skip=true_skip, elu_alpha=elu_alpha, **conv))
            layers += [nn.ELU(elu_alpha), Conv1d(width, 2 * width, 2 * ratio, stride=ratio, **conv)]
            width *= 2
        if lstm:
            layers.append(SLSTM(width, lstm))
        layers += [nn.ELU(elu_alpha), Conv1d(width, dimension, last_kernel_size, **conv)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class SEANetDecoder(Configurable, nn.Module):
    """Latent ``(B, dimension, T)`` -> waveform ``(B, channels, T * prod(ratios))`` (EnCodec's decoder)."""

    def __init__(
        self, channels: int = 1, dimension: int = 512, n_filters: int = 32, n_residual_layers: int = 1,
        ratios: Sequence[int] = (8, 5, 4, 2), activation: str = "ELU", elu_alpha: float = 1.0, kernel_size: int = 7,
        residual_kernel_size: int = 3, last_kernel_size: int = 7, dilation_base: int = 2, causal: bool = False,
        pad_mode: str = "reflect", true_skip: bool = False, compress: int = 2, lstm: int = 2,
        norm: str = "weight_norm",
    ) -> None:
        super().__init__()
        _check_activation(activation)
        conv = dict(causal=causal, norm=norm, pad_mode=pad_mode)
        width = n_filters * 2 ** len(ratios)
        layers: list[nn.Module] = [Conv1d(dimension, width, kernel_size, **conv)]
        if lstm:
            layers.append(SLSTM(width, lstm))
        for ratio in ratios:
            layers += [nn.ELU(elu_alpha), ConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio, causal=causal,
                                                          norm=norm)]
            for j in range(n_residual_layers):
                layers.append(SEANetResBlock(width // 2, kernel_sizes=(residual_kernel_size, 1),
                                             dilations=(dilation_base ** j, 1), compress=compress,
                                             true_skip=true_skip, elu_alpha=elu_alpha, **conv))
            width //= 2
        layers += [nn.ELU(elu_alpha), Conv1d(n_filters, channels, last_kernel_size, **conv)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z)
