"""TokenFlow (ByteFlow-AI, CVPR 2025): one shared index per position for a semantic and a pixel codebook.

    x [-1,1] --scaling--> semantic tower (CLIP / SigLIP) --encode_task_layer--> sem [B, S, g, g] --+
    x --(bicubic to 16*g if needed)--> conv Encoder --quant_conv--> pix [B, P, g, g] -------------+--> h
    h --DualCodebookQuantizer (multi-scale, shared index)--> quant [B, S+P, g, g], ids per scale
    quant[:S] --SemanticDecoder--decode_task_layer--> semantic features [B, g*g, out]   (distillation target)
    quant[S:] --post_quant_conv--Decoder--> image (bicubically resized to ``pixel_output_size`` if set)

The pixel Encoder/Decoder are `tokenforge.tokenizers.vqgan.networks` (the "enhanced" decoder is
``decoder_ch=256, decoder_num_res_blocks=4``). Parameter names are ours; `tokenforge.tokenizers.tokenflow.official`
maps the released key layout onto them (``encoder_vqkd`` -> ``semantic_encoder``, ``decoder_vqkd`` ->
``semantic_decoder``, ``quantize`` -> ``quantizer``).

Deviation: when ``pixel_output_size`` is None and the pixel branch had to resize its input (SigLIP: 384 ->
432 px), ``forward`` and ``decode`` resize the reconstruction back to the input size; the official decode
always resizes to a hard-coded 384 (set ``pixel_output_size=384`` for that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.tokenizers.base import AutoencoderOutput, Tokenizer, Tokens
from tokenforge.tokenizers.tokenflow.quantizer import DualCodebookQuantizer
from tokenforge.tokenizers.tokenflow.semantic import SemanticDecoder, task_layer
from tokenforge.tokenizers.tokenflow.towers import ScalingLayer
from tokenforge.tokenizers.vqgan.networks import Decoder, Encoder


@dataclass
class TokenFlowOutput(AutoencoderOutput):
    """`AutoencoderOutput` plus the semantic decoder's features ``[B, g*g, out]`` (for distillation)."""

    semantic: Tensor | None = None


class TokenFlow(Tokenizer):
    """Dual-codebook multi-scale image tokenizer; see the module docstring."""

    modality = "image"
    token_layout = "scales"

    def __init__(
        self,
        semantic_encoder: nn.Module,
        quantizer: DualCodebookQuantizer,
        semantic_decoder: SemanticDecoder,
        decoder_out_dim: int = 512,
        semantic_scaling: str | None = None,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        z_channels: int = 256,
        decoder_ch: int | None = None,
        decoder_num_res_blocks: int | None = None,
        dropout: float = 0.0,
        pixel_output_size: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(quantizer, DualCodebookQuantizer):
            raise TypeError(f"TokenFlow needs a DualCodebookQuantizer, got {type(quantizer).__name__}")
        if semantic_decoder.patch_embed.in_channels != quantizer.semantic_dim:
            raise ValueError(f"semantic_decoder reads {semantic_decoder.patch_embed.in_channels} channels but the "
                             f"quantizer's semantic part has {quantizer.semantic_dim}")
        ch_mult = list(ch_mult)
        self.semantic_encoder, self.quantizer, self.semantic_decoder = semantic_encoder, quantizer, semantic_decoder
        self.scaling_layer = ScalingLayer(semantic_scaling) if semantic_scaling else None
        self.encode_task_layer = task_layer(semantic_encoder.out_dim, quantizer.semantic_dim)
        self.decode_task_layer = task_layer(semantic_decoder.pos_embed.shape[-1], decoder_out_dim)
        common = dict(ch_mult=ch_mult, z_channels=z_channels, dropout=dropout)
        self.encoder = Encoder(in_channels=3, ch=ch, num_res_blocks=num_res_blocks, **common)
        self.decoder = Decoder(out_channels=3, ch=decoder_ch or ch,
                               num_res_blocks=decoder_num_res_blocks or num_res_blocks, **common)
        self.quant_conv = nn.Conv2d(z_channels, quantizer.pixel_dim, 1)
        self.post_quant_conv = nn.Conv2d(quantizer.pixel_dim, z_channels, 1)
        self.downsample_factor = self.encoder.downsample_factor
        self.pixel_output_size = pixel_output_size

    # ------------------------------------------------------------------ contract

    @property
    def vocab_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def image_size(self) -> int:
        """Native input side: the SigLIP tower's fixed size, else grid x CLIP patch (256 for the clipb release)."""
        tower = self.semantic_encoder
        if hasattr(tower, "position_embedding"):
            return int(tower.image_size)
        return self.quantizer.grid * int(tower.patch_size)

    @property
    def semantic_dim(self) -> int:
        return self.quantizer.semantic_dim

    def encode(self, x: Tensor, next_scale_inputs: bool = False) -> Tokens:
        """Images ``[B,3,H,W]`` in [-1,1] -> `Tokens`: ids = per-scale ``[B, s*s]`` list, latents = ``quant``.

        ``next_scale_inputs``: also put the next-scale generator's teacher-forcing inputs ``[B, L-1, S+P]`` in
        ``meta["next_scale_inputs"]``.
        """
        h = self.features(x)[0]
        quant, ids = self.quantizer.quantize_all(h)
        meta = self._meta(x)
        if next_scale_inputs:
            meta["next_scale_inputs"] = self.quantizer.next_scale_inputs(ids)
        return Tokens(ids=ids, latents=quant, meta=meta)

    def decode(self, tokens: Tokens | Tensor | list[Tensor]) -> Tensor:
        """`Tokens` (or bare ids, per scale or concatenated ``[B, L]``) -> image clamped to [-1, 1]."""
        quant = self._quant_from(tokens)
        size = self.pixel_output_size
        if size is None and isinstance(tokens, Tokens) and "image_size" in tokens.meta:
            size = tokens.meta["image_size"]
        return self.decode_pixels(quant, size).clamp(-1.0, 1.0)

    def decode_semantic(self, tokens: Tokens | Tensor | list[Tensor]) -> Tensor:
        """`Tokens` or ids -> semantic features ``[B, g*g, decoder_out_dim]`` (for understanding models)."""
        return self.decode_semantic_latents(self._quant_from(tokens))

    def next_scale_inputs(self, tokens: Tokens | Tensor | list[Tensor]) -> Tensor:
        """Teacher-forcing inputs of a next-scale generator (official t2i ``VQTower.forward``)."""
        ids = tokens.ids if isinstance(tokens, Tokens) else tokens
        return self.quantizer.next_scale_inputs(ids)

    def forward(self, x: Tensor) -> TokenFlowOutput:
        h = self.features(x)[0]
        q = self.quantizer(h)
        x_hat = self.decode_pixels(q.quantized, tuple(x.shape[-2:]))
        semantic = self.decode_semantic_latents(q.quantized)
        return TokenFlowOutput(x_hat=x_hat, tokens=Tokens(ids=q.indices, meta=self._meta(x)), aux_loss=q.loss,
                               metrics=dict(q.metrics), semantic=semantic)

    # ------------------------------------------------------------------ pieces (official decode / parity)

    def semantic_tokens(self, x: Tensor) -> Tensor:
        """The semantic tower's tokens ``[B, g*g, E]`` (CLIP: ln_post patch tokens; SigLIP: hidden_states[-2])."""
        self._check_image(x)
        return self.semantic_encoder(self.scaling_layer(x) if self.scaling_layer is not None else x)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pre-quantisation ``h = [sem; pix]`` ``[B, S+P, g, g]`` and its two halves."""
        tokens = self.semantic_tokens(x)
        g = self.semantic_encoder.grid(tuple(x.shape[-2:]))
        sem = self.encode_task_layer(tokens).transpose(1, 2).reshape(x.shape[0], -1, g, g)
        side = g * self.downsample_factor
        pixel_input = x if tuple(x.shape[-2:]) == (side, side) else F.interpolate(
            x, size=(side, side), mode="bicubic", align_corners=False)
        pix = self.quant_conv(self.encoder(pixel_input))
        return torch.cat([sem, pix.to(sem.dtype)], dim=1), sem, pix

    def decode_quant(self, quant: Tensor) -> tuple[Tensor, Tensor]:
        """Official ``decode``: ``quant`` -> (semantic features, unclamped image at ``pixel_output_size``)."""
        return self.decode_semantic_latents(quant), self.decode_pixels(quant, self.pixel_output_size)

    def decode_code(self, indices: Tensor | list[Tensor]) -> tuple[Tensor, Tensor]:
        """Official ``decode_code``: concatenated (or per-scale) indices -> (semantic, unclamped image)."""
        return self.decode_quant(self.quantizer.decode(indices))

    def decode_semantic_latents(self, quant: Tensor) -> Tensor:
        return self.decode_task_layer(self.semantic_decoder(quant[:, : self.semantic_dim]))

    def decode_pixels(self, quant: Tensor, size: int | Sequence[int] | None = None) -> Tensor:
        """Pixel half of ``quant`` -> unclamped image, bicubically resized to ``size`` when given and different."""
        image = self.decoder(self.post_quant_conv(quant[:, self.semantic_dim:]))
        if size is not None:
            size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
            if tuple(image.shape[-2:]) != size:
                image = F.interpolate(image, size=size, mode="bicubic", align_corners=False)
        return image

    # ------------------------------------------------------------------ helpers

    def _quant_from(self, tokens: Tokens | Tensor | list[Tensor]) -> Tensor:
        ids = tokens.ids if isinstance(tokens, Tokens) else tokens
        if ids is None:
            if isinstance(tokens, Tokens) and tokens.latents is not None:
                return tokens.latents
            raise ValueError("TokenFlow.decode needs Tokens with ids (or latents); these carry neither")
        return self.quantizer.decode(ids)

    def _check_image(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"TokenFlow expects float RGB images [B, 3, H, W] in [-1, 1], got {shape}")

    def _meta(self, x: Tensor) -> dict:
        return {"image_size": [int(x.shape[-2]), int(x.shape[-1])], "scales": list(self.quantizer.scales)}
