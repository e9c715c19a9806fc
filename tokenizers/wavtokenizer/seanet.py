"""EnCodec's SEANet encoder (WavTokenizer's front end) and the SEANet decoder its checkpoints carry.

Built from `tokenforge.nn.conv1d` blocks in the official ``nn.Sequential`` index layout (``model.{i}``), so
official keys load with one rename (EnCodec's extra ``.conv``/``.convtr`` level) plus the legacy weight-norm
key conversion. Every size EnCodec's ``EncodecFeatures`` hard-codes (``n_filters``, ``dimension``, ``lstm``,
...) is an argument here. ``ratios`` are listed decoder-order as in EnCodec: the encoder applies them reversed.

The decoder is never called by WavTokenizer (the Vocos backbone + iSTFT head decode); it exists so released
checkpoints load strictly and is excluded from training when ``WavTokenizer(seanet_decoder=False)``.

``init="variance_preserving"`` (off by default; the official code keeps PyTorch's default init) re-draws every
convolution of the encoder with unit-gain He weights and zero biases. Why: with the default init each conv
shrinks the input-dependent part of its output (gain ~1/sqrt(3)) while the biases add an input-independent
offset, so at init only ~4 % of the latent's RMS depends on the audio (paper size: 0.0013 of 0.029). The decoder
then learns the mean spectrum first, and in a minutes-long run it never gets past that: held-out mel distance
equals that of a one-code model, and a quantizer-free autoencoder is no better (CPU, docs/methods/wavtokenizer.md,
"Short runs"). With this init ~98 % of the latent depends on the input and the mel falls well below that level
within 100 batches. A deviation for short runs (`configs/tokenizers/wavtokenizer/short_75.yaml`), not the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.nn.conv1d import SLSTM, Conv1d, ConvTranspose1d, ConvResidualUnit1d, pad1d


INITS = ("pytorch", "variance_preserving")


@torch.no_grad()
def variance_preserving_init(module: nn.Module) -> None:
    """Unit-gain He-normal weights and zero biases for every ``nn.Conv1d`` in ``module`` (weight norm kept:
    direction = the new weight, magnitude = its per-output-channel norm)."""
    for conv in module.modules():
        if not isinstance(conv, nn.Conv1d):
            continue
        weight = nn.init.kaiming_normal_(torch.empty_like(conv.weight), nonlinearity="linear")
        if hasattr(conv, "parametrizations"):  # torch weight_norm: original0 = g, original1 = v
            conv.parametrizations.weight.original1.copy_(weight)
            conv.parametrizations.weight.original0.copy_(weight.norm(dim=(1, 2), keepdim=True))
        else:
            conv.weight.copy_(weight)
        if conv.bias is not None:
            conv.bias.zero_()


def _apply_init(module: nn.Module, init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "variance_preserving":
        variance_preserving_init(module)


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
        norm: str = "weight_norm", init: str = "pytorch",
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
                layers.append(ConvResidualUnit1d(width, kernel_sizes=(residual_kernel_size, 1),
                                             dilations=(dilation_base ** j, 1), compress=compress,
                                             true_skip=true_skip, elu_alpha=elu_alpha, **conv))
            layers += [nn.ELU(elu_alpha), Conv1d(width, 2 * width, 2 * ratio, stride=ratio, **conv)]
            width *= 2
        if lstm:
            layers.append(SLSTM(width, lstm))
        layers += [nn.ELU(elu_alpha), Conv1d(width, dimension, last_kernel_size, **conv)]
        self.model = nn.Sequential(*layers)
        _apply_init(self, init)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``lengths`` (samples per item of a right-padded batch): each item's frames equal its own pass alone."""
        if lengths is None:
            return self.model(x)
        return run_with_lengths(self.model, x, [int(n) for n in lengths])[0]


def padded_per_item(conv: Conv1d, x: Tensor, lengths: list[int]) -> Tensor:
    """``x`` right-padded ``(B, C, T)`` -> the batch of each item's own padded input (its length's reflect and extra
    padding, exactly as `Conv1d.forward` pads it alone), left-aligned and zero-filled to the widest."""
    pieces = [pad1d(x[i:i + 1, :, :n], *conv.padding(n), conv.pad_mode) for i, n in enumerate(lengths)]
    if len(pieces) == 1:
        return pieces[0]
    out = x.new_zeros(x.shape[0], x.shape[1], max(p.shape[-1] for p in pieces))
    for i, piece in enumerate(pieces):
        out[i, :, :piece.shape[-1]] = piece[0]
    return out


def run_with_lengths(module: nn.Module, x: Tensor, lengths: list[int]) -> tuple[Tensor, list[int]]:
    """Run an encoder stack on a right-padded batch so every item sees only its own samples: each `Conv1d` pads
    every item as it would pad it alone (reflect at the item's own end, length-dependent extra padding), the
    residual units do so in both branches, the LSTM runs forward in time (causal: what follows an item's end
    never reaches its frames) and pointwise layers need nothing. Returns the output and the new lengths."""
    if isinstance(module, Conv1d):
        out = module.conv(padded_per_item(module, x, lengths))
        return out, [-(-n // module.stride) for n in lengths]
    if isinstance(module, ConvResidualUnit1d):
        block, _ = run_with_lengths(module.block, x, lengths)
        short, _ = run_with_lengths(module.shortcut, x, lengths)
        return short + block, lengths
    if isinstance(module, nn.Sequential):
        for layer in module:
            x, lengths = run_with_lengths(layer, x, lengths)
        return x, lengths
    if isinstance(module, (SLSTM, nn.ELU, nn.Identity)):
        return module(x), lengths
    raise TypeError(f"run_with_lengths: no length rule for {type(module).__name__}")


class SEANetDecoder(Configurable, nn.Module):
    """Latent ``(B, dimension, T)`` -> waveform ``(B, channels, T * prod(ratios))`` (EnCodec's decoder)."""

    def __init__(
        self, channels: int = 1, dimension: int = 512, n_filters: int = 32, n_residual_layers: int = 1,
        ratios: Sequence[int] = (8, 5, 4, 2), activation: str = "ELU", elu_alpha: float = 1.0, kernel_size: int = 7,
        residual_kernel_size: int = 3, last_kernel_size: int = 7, dilation_base: int = 2, causal: bool = False,
        pad_mode: str = "reflect", true_skip: bool = False, compress: int = 2, lstm: int = 2,
        norm: str = "weight_norm", init: str = "pytorch",
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
                layers.append(ConvResidualUnit1d(width // 2, kernel_sizes=(residual_kernel_size, 1),
                                             dilations=(dilation_base ** j, 1), compress=compress,
                                             true_skip=true_skip, elu_alpha=elu_alpha, **conv))
            width //= 2
        layers += [nn.ELU(elu_alpha), Conv1d(n_filters, channels, last_kernel_size, **conv)]
        self.model = nn.Sequential(*layers)
        _apply_init(self, init)  # its Conv1d layers only; accepted so a decoder takes its encoder's arguments

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z)
