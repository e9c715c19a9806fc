"""FlexTok tokenizer: images -> 1..R ordered 1D FSQ tokens -> images with a rectified-flow decoder.

``encode(images) -> Tokens`` (all R ids + lengths); ``decode(tokens, k=...)`` keeps the first k ids of each
sample (k an int or one per sample, 1..R, mixed k in one batch) and fills the rest with the mask token, as
the official ``detokenize`` does. Tokens with ``lengths`` decode at those lengths unless ``k`` is given.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tokenforge.tokenizers.base import AutoencoderOutput, Tokenizer, Tokens
from tokenforge.tokenizers.flextok.networks import FlexTokDecoder, FlexTokEncoder, FlexTokVAE
from tokenforge.tokenizers.flextok.sampler import sample
from tokenforge.tokenizers.quantizers.fsq import FSQ


class FlexTok(Tokenizer):
    """VAE + register encoder + FSQ + flow decoder, with the sampler's defaults (official pipeline/README)."""

    modality = "image"
    token_layout = "sequence"

    def __init__(
        self, vae: FlexTokVAE | None = None, encoder: FlexTokEncoder | None = None,
        decoder: FlexTokDecoder | None = None, levels: list[int] | tuple[int, ...] = (8, 8, 8, 5, 5, 5),
        steps: int = 25, guidance_scale: float = 1.0, apg: bool = True, momentum: float = -0.5, eta: float = 0.0,
        norm_threshold: float = 2.5,
    ) -> None:
        super().__init__()
        self.vae = vae if vae is not None else FlexTokVAE()
        self.encoder = encoder if encoder is not None else FlexTokEncoder()
        self.decoder = decoder if decoder is not None else FlexTokDecoder()
        self.quantizer = FSQ(list(levels))
        if self.encoder.num_registers != self.decoder.num_registers:
            raise ValueError("encoder and decoder must have the same number of registers")
        self.steps, self.guidance_scale, self.apg = steps, guidance_scale, apg
        self.momentum, self.eta, self.norm_threshold = momentum, eta, norm_threshold

    @property
    def vocab_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def num_registers(self) -> int:
        return self.encoder.num_registers

    # ------------------------------------------------------------------ encode
    def encode_codes(self, latents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """VAE latents -> (pre-quantisation features, codes in [-1, 1], ids), all ``[B, R, ...]``."""
        z = self.encoder(latents)
        with torch.autocast(device_type=z.device.type, enabled=False):
            codes = self.quantizer.quantize_last(z.float())
            ids = self.quantizer.codes_to_indices_last(codes.detach())
        return z, codes, ids

    def encode(self, x: Tensor) -> Tokens:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> ``Tokens(ids [B, R], latents=codes, lengths=R)``."""
        latents = self.vae.encode(x)
        _, codes, ids = self.encode_codes(latents)
        lengths = torch.full((len(ids),), ids.shape[1], dtype=torch.long, device=ids.device)
        return Tokens(ids=ids, latents=codes, lengths=lengths,
                      meta={"latent_shape": list(latents.shape[1:]), "image_size": list(x.shape[-2:])})

    # ------------------------------------------------------------------ decode
    def keep_k(self, k: int | list[int] | Tensor, batch: int, device: torch.device) -> Tensor:
        """``k`` as a ``[B]`` LongTensor; every value must be in 1..R."""
        keep = torch.as_tensor(k, dtype=torch.long, device=device).reshape(-1)
        if keep.numel() == 1:
            keep = keep.expand(batch)
        if keep.numel() != batch:
            raise ValueError(f"k must be one int or one per sample ({batch}), got {keep.numel()} values")
        if bool(((keep < 1) | (keep > self.num_registers)).any()):
            raise ValueError(f"k must be in 1..{self.num_registers}, got {keep.tolist()}")
        return keep

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        """ids ``[B, l]`` (l <= R) -> codes ``[B, R, fsq_dim]``, padded with id 0 as the official detokenize."""
        if ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"ids must be an integer tensor [B, l], got {tuple(ids.shape)} {ids.dtype}")
        if ids.shape[1] > self.num_registers or ids.shape[1] < 1:
            raise ValueError(f"got {ids.shape[1]} ids per sample; FlexTok takes 1..{self.num_registers}")
        if bool(((ids < 0) | (ids >= self.vocab_size)).any()):
            raise ValueError(f"token ids must be in [0, {self.vocab_size})")
        padded = torch.zeros(len(ids), self.num_registers, dtype=torch.long, device=ids.device)
        padded[:, : ids.shape[1]] = ids
        return self.quantizer.indices_to_codes_last(padded)

    def decode_latents(
        self, ids: Tensor, k: int | list[int] | Tensor | None = None, noise: Tensor | None = None,
        latent_shape: tuple[int, int, int] | None = None, steps: int | None = None,
        guidance_scale: float | None = None, apg: bool | None = None, generator: torch.Generator | None = None,
    ) -> Tensor:
        """Token ids -> VAE latents by sampling the flow decoder (defaults from the constructor)."""
        codes = self.ids_to_codes(ids)
        keep = self.keep_k(ids.shape[1] if k is None else k, len(ids), ids.device)
        if noise is None:
            shape = latent_shape or self._default_latent_shape()
            noise = torch.randn((len(ids), *shape), generator=generator, device=ids.device)
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        cond = self.decoder.condition(codes, keep)
        uncond = None
        if scale != 1.0:
            uncond = self.decoder.condition(codes, keep, drop=torch.ones(len(ids), dtype=torch.bool, device=ids.device))
        return sample(
            lambda x, t, c: self.decoder(x, t, c), noise, cond, uncond, steps or self.steps, scale,
            self.apg if apg is None else apg, self.momentum, self.eta, self.norm_threshold,
        )

    def _default_latent_shape(self) -> tuple[int, int, int]:
        h, w = self.decoder.patch_emb.posembs.shape[-2:]
        return (self.decoder.latent_channels, h * self.decoder.patch, w * self.decoder.patch)

    def decode(self, tokens: Tokens | Tensor, k: int | list[int] | Tensor | None = None, **kwargs: Any) -> Tensor:
        """Tokens (or ids ``[B, l]``) -> images ``[B, 3, H, W]``; ``k`` keeps the first k tokens per sample."""
        ids = tokens.ids if isinstance(tokens, Tokens) else tokens
        if not isinstance(ids, Tensor):
            raise ValueError("FlexTok.decode needs Tokens with ids [B, l] (or the ids tensor itself)")
        if k is None and isinstance(tokens, Tokens) and tokens.lengths is not None:
            k = tokens.lengths
        if isinstance(tokens, Tokens) and "latent_shape" in tokens.meta and "latent_shape" not in kwargs:
            kwargs["latent_shape"] = tuple(tokens.meta["latent_shape"])
        return self.vae.decode(self.decode_latents(ids, k, **kwargs)).clamp(-1, 1)

    def forward(self, x: Tensor) -> AutoencoderOutput:
        """Reconstruction through all tokens (evaluation pass); training uses `FlexTokModule`'s flow loss."""
        tokens = self.encode(x)
        return AutoencoderOutput(self.decode(tokens), tokens, torch.zeros((), device=x.device))
