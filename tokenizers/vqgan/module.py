"""Lightning module that trains a `VQGAN`: the shared `TokenizerModule` step with LlamaGen's defaults.

Defaults follow LlamaGen / TokenFlow (spec tokenflow.md §3.4-3.5): MSE reconstruction (1.0), LPIPS (1.0),
hinge GAN (generator 0.5) after ``disc_start`` = 20000 generator steps, the quantizer's own loss (1.0),
Adam lr 1e-4 betas (0.9, 0.95) for both networks, gradient-norm clip 1.0. Taming's adaptive GAN weight is
not implemented: LlamaGen and TokenFlow train with it disabled.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tokenforge.tokenizers.base import TokenizerModule
from tokenforge.tokenizers.vqgan.model import VQGAN


class VQGANModule(TokenizerModule):
    """`TokenizerModule` for a `VQGAN` with a (PatchGAN) discriminator; see the module docstring for defaults."""

    def __init__(self, model: VQGAN, discriminator: nn.Module | None = None, perceptual: nn.Module | None = None, *,
                 disc_start: int = 20000, **kwargs: Any) -> None:
        """Every other argument is `TokenizerModule`'s (its defaults are LlamaGen's except ``disc_start``)."""
        if not isinstance(model, VQGAN):
            raise TypeError(f"VQGANModule trains a VQGAN, got {type(model).__name__}; use TokenizerModule for others")
        super().__init__(model, discriminator, perceptual, disc_start=disc_start, **kwargs)
