"""`KLAutoencoderModule`: the shared `TokenizerModule` step for a `KLAutoencoder`.

LDM's KL-VAE recipe: L1 reconstruction (1.0) + LPIPS (1.0) + KL (weight inside the model, 1e-6) + hinge GAN
(0.5) after ``disc_start`` generator steps, Adam. LDM's adaptive GAN weight is ``adaptive_weight=True``
(`TokenizerModule`); off by default, where the fixed ``adversarial_weight`` stands in for it (as for VQGAN).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tokenforge.tokenizers.base import TokenizerModule
from tokenforge.tokenizers.klvae.model import KLAutoencoder


class KLAutoencoderModule(TokenizerModule):
    """`TokenizerModule` with LDM's KL-VAE defaults (L1, no L2, late GAN); every other argument is the base's."""

    def __init__(self, model: KLAutoencoder, discriminator: nn.Module | None = None,
                 perceptual: nn.Module | None = None, *, l1_weight: float = 1.0, l2_weight: float = 0.0,
                 disc_start: int = 50001, **kwargs: Any) -> None:
        super().__init__(model, discriminator, perceptual, l1_weight=l1_weight, l2_weight=l2_weight,
                         disc_start=disc_start, **kwargs)
