"""`KLAutoencoderModule`: the shared `TokenizerModule` step for a `KLAutoencoder`.

LDM's KL-VAE recipe: L1 reconstruction (1.0) + LPIPS (1.0) + KL (weight inside the model, 1e-6) + hinge GAN
(0.5) after ``disc_start`` generator steps, Adam. LDM's adaptive GAN weight is not implemented (as in the VQGAN
module); the fixed ``adversarial_weight`` stands in for it.
"""

from __future__ import annotations

from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from tokenforge.tokenizers.base import TokenizerModule
from tokenforge.tokenizers.klvae.model import KLAutoencoder


class KLAutoencoderModule(TokenizerModule):
    def __init__(
        self,
        model: KLAutoencoder,
        discriminator: nn.Module | None = None,
        perceptual: nn.Module | None = None,
        l1_weight: float = 1.0,
        l2_weight: float = 0.0,
        perceptual_weight: float = 1.0,
        adversarial_weight: float = 0.5,
        disc_start: int = 50001,
        gradient_clip_val: float | None = 1.0,
        optimizer: OptimizerCallable | None = None,
        disc_optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        disc_lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(model, discriminator, perceptual, l1_weight=l1_weight, l2_weight=l2_weight,
                         perceptual_weight=perceptual_weight, aux_weight=1.0, adversarial_weight=adversarial_weight,
                         disc_start=disc_start, gradient_clip_val=gradient_clip_val, optimizer=optimizer,
                         disc_optimizer=disc_optimizer, lr_scheduler=lr_scheduler,
                         disc_lr_scheduler=disc_lr_scheduler)
