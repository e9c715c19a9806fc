"""`KLAutoencoder`: diffusers' ``AutoencoderKL`` wrapped as a tokenforge `Tokenizer` with continuous latents.

- ``encode(x)`` -> `Tokens` with ``latents`` ``(B, C, h, w)`` = (posterior mode - shift) * scaling_factor (the
  scaled space generators train in; MAR uses 0.2325 for its KL-16, SD 0.18215) and an EMPTY ``ids`` ``(B, 0)``
  (a continuous tokenizer has no codes; the empty grid keeps id-oriented tools such as the shard encoder working).
- ``decode(tokens)`` undoes the scaling and runs the decoder.
- ``forward(x)`` is the training pass for the shared `TokenizerModule` (autoencoder + GAN loop): a posterior
  SAMPLE is decoded and ``aux_loss`` is the KL term ``KL(q(z|x) || N(0, I))`` summed over latent elements and
  averaged over the batch (LDM's ``kl_loss``), times ``kl_weight`` (LDM: 1e-6).
- Every constructor argument is a diffusers config field (JSON-able), so the hub rebuilds it; a local diffusers
  folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) loads with ``from_official("diffusers_vae",
  folder)`` (`tokenforge.tokenizers.klvae.official`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tokenforge.tokenizers.base import AutoencoderOutput, Tokenizer, Tokens


class KLAutoencoder(Tokenizer):
    """Continuous image tokenizer; ``latent_channels`` x (H / 2^(levels-1)) x (W / 2^(levels-1)) latents."""

    modality = "image"
    token_layout = "grid"

    def __init__(
        self,
        block_out_channels: list[int] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
        kl_weight: float = 1e-6,
        sample_size: int = 256,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderKL

        n = len(block_out_channels)
        self.vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block, latent_channels=latent_channels, norm_num_groups=norm_num_groups,
            sample_size=sample_size, scaling_factor=scaling_factor, shift_factor=shift_factor,
            use_quant_conv=use_quant_conv, use_post_quant_conv=use_post_quant_conv,
            mid_block_add_attention=mid_block_add_attention,
        )
        self.scaling_factor, self.shift_factor = float(scaling_factor), float(shift_factor or 0.0)
        self.kl_weight, self.latent_channels = kl_weight, latent_channels
        self.downsample = 2 ** (n - 1)

    @property
    def vocab_size(self) -> int:
        return 0  # continuous: no codebook

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"KLAutoencoder takes images (B, 3, H, W) in [-1, 1], got shape {tuple(x.shape)}")
        if x.shape[-1] % self.downsample or x.shape[-2] % self.downsample:
            raise ValueError(f"image sides {tuple(x.shape[-2:])} must be multiples of {self.downsample}")

    def scale(self, z: Tensor) -> Tensor:
        return (z - self.shift_factor) * self.scaling_factor

    def unscale(self, latents: Tensor) -> Tensor:
        return latents / self.scaling_factor + self.shift_factor

    def encode(self, x: Tensor, sample: bool = False) -> Tokens:
        """Scaled latents of the posterior mode (or a sample with ``sample=True``, as MAR trains on)."""
        self._check(x)
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample() if sample else posterior.mode()
        latents = self.scale(z)
        return Tokens(ids=torch.zeros(x.shape[0], 0, dtype=torch.long, device=x.device), latents=latents,
                      meta={"latent_shape": list(latents.shape[1:]), "scaling_factor": self.scaling_factor,
                            "shift_factor": self.shift_factor})

    def decode(self, tokens: Tokens | Tensor) -> Tensor:
        latents = tokens.latents if isinstance(tokens, Tokens) else tokens
        if latents is None or latents.dim() != 4 or latents.shape[1] != self.latent_channels:
            got = None if latents is None else tuple(latents.shape)
            raise ValueError(f"decode needs latents (B, {self.latent_channels}, h, w), got {got}")
        return self.vae.decode(self.unscale(latents)).sample

    def forward(self, x: Tensor) -> AutoencoderOutput:
        self._check(x)
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample()
        x_hat = self.vae.decode(z).sample
        kl = posterior.kl().mean()  # summed over C, h, w per sample (diffusers), mean over the batch
        tokens = Tokens(ids=torch.zeros(x.shape[0], 0, dtype=torch.long, device=x.device), latents=self.scale(z))
        metrics: dict[str, Any] = {"kl": kl.detach(), "latent_std": self.scale(z).detach().std()}
        return AutoencoderOutput(x_hat=x_hat, tokens=tokens, aux_loss=self.kl_weight * kl, metrics=metrics)
