"""VQGAN: conv encoder -> quant_conv -> injected quantizer -> post_quant_conv -> conv decoder.

The quantizer is passed in as a module, so this one class is LlamaGen's VQ tokenizer (a `VectorQuantizer`
with l2-normalised codes, 1x1 quant convs) and VAR's multi-scale VQVAE (a `MultiScaleResidualQuantizer`,
3x3 quant convs, ``token_layout == "scales"``). Images are ``[B, 3, H, W]`` in [-1, 1].

``forward`` (training) returns the unclamped reconstruction; ``decode`` (inference) clamps to [-1, 1], as
VAR's ``idxBl_to_img`` and image writers expect, so ``decode(encode(x)) == forward(x).x_hat.clamp(-1, 1)``
in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tokenforge.tokenizers.base import AutoencoderOutput, Tokenizer, Tokens
from tokenforge.tokenizers.vqgan.networks import Decoder, Encoder


class VQGAN(Tokenizer):
    """Image tokenizer with a taming/LlamaGen conv encoder-decoder around an injected quantizer."""

    modality = "image"

    def __init__(
        self,
        quantizer: nn.Module,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        z_channels: int = 256,
        in_channels: int = 3,
        dropout: float = 0.0,
        attn_last_level: bool = True,
        attn_mid: bool = True,
        quant_conv_kernel: int = 1,
        decoder_ch: int | None = None,
        decoder_num_res_blocks: int | None = None,
    ) -> None:
        super().__init__()
        for name in ("encode", "decode", "forward", "dim"):
            if not hasattr(quantizer, name):
                raise TypeError(f"quantizer {type(quantizer).__name__} lacks .{name}; pass a tokenforge Quantizer")
        if quant_conv_kernel % 2 != 1:
            raise ValueError(f"quant_conv_kernel must be odd (1 for LlamaGen, 3 for VAR), got {quant_conv_kernel}")
        ch_mult = list(ch_mult)
        self.quantizer = quantizer
        common = dict(ch_mult=ch_mult, z_channels=z_channels, dropout=dropout,
                      attn_last_level=attn_last_level, attn_mid=attn_mid)
        self.encoder = Encoder(in_channels=in_channels, ch=ch, num_res_blocks=num_res_blocks, **common)
        self.decoder = Decoder(out_channels=in_channels, ch=decoder_ch or ch,
                               num_res_blocks=decoder_num_res_blocks or num_res_blocks, **common)
        pad = quant_conv_kernel // 2
        self.quant_conv = nn.Conv2d(z_channels, quantizer.dim, quant_conv_kernel, 1, pad)
        self.post_quant_conv = nn.Conv2d(quantizer.dim, z_channels, quant_conv_kernel, 1, pad)
        self.in_channels = in_channels
        self.downsample_factor = self.encoder.downsample_factor

    # ------------------------------------------------------------------ contract

    @property
    def token_layout(self) -> str:  # type: ignore[override]
        """``scales`` for multi-scale quantizers (indices are a per-scale list), else ``grid``."""
        layout = getattr(self.quantizer, "token_layout", None)
        return layout if isinstance(layout, str) else "scales" if hasattr(self.quantizer, "num_scales") else "grid"

    @property
    def vocab_size(self) -> int:
        return int(self.quantizer.codebook_size)

    def encode(self, x: Tensor) -> Tokens:
        """Image ``[B, 3, H, W]`` in [-1,1] -> `Tokens` (ids ``[B, h, w]`` or a per-scale list)."""
        z = self.features(x)
        ids = self.quantizer.encode(z)
        return Tokens(ids=ids, meta=self._meta(x, z))

    def decode(self, tokens: Tokens | Tensor | list[Tensor]) -> Tensor:
        """`Tokens` (or bare ids) -> image ``[B, 3, H, W]`` clamped to [-1, 1]."""
        ids = tokens.ids if isinstance(tokens, Tokens) else tokens
        if ids is None:
            raise ValueError("VQGAN.decode needs Tokens with ids; these Tokens carry none")
        return self.decode_latents(self.quantizer.decode(ids)).clamp(-1.0, 1.0)

    def forward(self, x: Tensor) -> AutoencoderOutput:
        z = self.features(x)
        q = self.quantizer(z)
        x_hat = self.decode_latents(q.quantized)
        return AutoencoderOutput(x_hat=x_hat, tokens=Tokens(ids=q.indices, meta=self._meta(x, z)),
                                 aux_loss=q.loss, metrics=dict(q.metrics))

    # ------------------------------------------------------------------ pieces (parity tests, other methods)

    def features(self, x: Tensor) -> Tensor:
        """Pre-quantisation map ``quant_conv(encoder(x))`` of shape ``[B, quantizer.dim, h, w]``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or not x.is_floating_point():
            raise ValueError(
                f"VQGAN expects float images [B, {self.in_channels}, H, W] in [-1, 1], got "
                f"{tuple(x.shape)} {x.dtype}"
            )
        return self.quant_conv(self.encoder(x))

    def decode_latents(self, z_q: Tensor) -> Tensor:
        """Quantised map ``[B, quantizer.dim, h, w]`` -> unclamped image ``decoder(post_quant_conv(z_q))``."""
        return self.decoder(self.post_quant_conv(z_q))

    def _meta(self, x: Tensor, z: Tensor) -> dict:
        return {"image_size": [int(x.shape[-2]), int(x.shape[-1])], "latent_size": [int(z.shape[-2]), int(z.shape[-1])]}
