"""Lightning module that trains a `VQGAN`: the shared `TokenizerModule` step with LlamaGen's defaults.

Defaults follow LlamaGen / TokenFlow (spec tokenflow.md §3.4-3.5): MSE reconstruction (1.0), LPIPS (1.0),
hinge GAN (generator 0.5) after ``disc_start`` = 20000 generator steps, the quantizer's own loss (1.0),
Adam lr 1e-4 betas (0.9, 0.95) for both networks, gradient-norm clip 1.0. Taming's adaptive GAN weight is
not implemented: LlamaGen and TokenFlow train with it disabled.
"""

from __future__ import annotations

from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from tokenforge.tokenizers.base import TokenizerModule
from tokenforge.tokenizers.vqgan.model import VQGAN


class VQGANModule(TokenizerModule):
    """`TokenizerModule` for a `VQGAN` with a (PatchGAN) discriminator; see the module docstring for defaults."""

    def __init__(
        self,
        model: VQGAN,
        discriminator: nn.Module | None = None,
        perceptual: nn.Module | None = None,
        l1_weight: float = 0.0,
        l2_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        aux_weight: float = 1.0,
        adversarial_weight: float = 0.5,
        feature_matching_weight: float = 0.0,
        disc_loss_weight: float = 1.0,
        adversarial_loss: str = "hinge",
        disc_start: int = 20000,
        gradient_clip_val: float | None = 1.0,
        optimizer: OptimizerCallable | None = None,
        disc_optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        disc_lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        if not isinstance(model, VQGAN):
            raise TypeError(f"VQGANModule trains a VQGAN, got {type(model).__name__}; use TokenizerModule for others")
        super().__init__(
            model, discriminator, perceptual, l1_weight=l1_weight, l2_weight=l2_weight,
            perceptual_weight=perceptual_weight, aux_weight=aux_weight, adversarial_weight=adversarial_weight,
            feature_matching_weight=feature_matching_weight, disc_loss_weight=disc_loss_weight,
            adversarial_loss=adversarial_loss, disc_start=disc_start, gradient_clip_val=gradient_clip_val,
            optimizer=optimizer, disc_optimizer=disc_optimizer, lr_scheduler=lr_scheduler,
            disc_lr_scheduler=disc_lr_scheduler,
        )
