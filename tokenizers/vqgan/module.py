"""Lightning module that trains a `VQGAN`: the shared `TokenizerModule` step with LlamaGen's defaults.

Defaults follow LlamaGen / TokenFlow (spec tokenflow.md §3.4-3.5): MSE reconstruction (1.0), LPIPS (1.0),
hinge GAN (generator 0.5) after ``disc_start`` = 20000 generator steps, the quantizer's own loss (1.0),
Adam lr 1e-4 betas (0.9, 0.95) for both networks, gradient-norm clip 1.0. ``adaptive_weight`` turns on
taming's adaptive GAN weight (LlamaGen's ``disc_adaptive_weight``; its training script leaves it off).
The whole recipe, official vs ours, is the "Training recipe" table of docs/methods/vqgan.md.

Three switches reproduce LlamaGen's ``vq_loss.py`` / ``vq_train.py`` where they differ from the intent; all default
to off, and the ``llamagen_vq_train`` parity fixture is checked with them on (`tokenforge.tokenizers.vqgan
.train_parity`):

- ``ignore_aux_weight``: LlamaGen's ``VQLoss`` stores ``codebook_weight`` and never applies it, so the quantizer's
  losses (codebook, commitment, entropy) always enter with weight 1. Off: ``aux_weight`` weights them (taming).
- ``swapped_bce_arguments``: LlamaGen's non-saturating losses call ``binary_cross_entropy_with_logits(ones,
  logits)`` (input and target swapped): the generator loss becomes the hinge one plus a constant and the
  discriminator's fake term a constant without gradient. Only matters with ``adversarial_loss="non_saturating"``
  (or ``disc_adversarial_loss``); off: the logistic losses the name promises.
- ``disc_start_counts_from_one``: ``vq_train.py`` passes ``global_step = train_steps + 1``, so its GAN joins on
  the ``disc_start``-th generator step, one step before ``disc_start`` steps are complete. Off: our convention,
  the GAN joins once the generator has taken ``disc_start`` steps (`GANModule`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tokenforge.tokenizers.base import TokenizerModule
from tokenforge.tokenizers.losses.adversarial import SWAPPED_BCE
from tokenforge.tokenizers.vqgan.model import VQGAN


class VQGANModule(TokenizerModule):
    """`TokenizerModule` for a `VQGAN` with a (PatchGAN) discriminator; see the module docstring for defaults."""

    def __init__(self, model: VQGAN, discriminator: nn.Module | None = None, perceptual: nn.Module | None = None, *,
                 disc_start: int = 20000, ignore_aux_weight: bool = False, swapped_bce_arguments: bool = False,
                 disc_start_counts_from_one: bool = False, **kwargs: Any) -> None:
        """The three switches are LlamaGen's quirks (module docstring); every other argument is
        `TokenizerModule`'s (its defaults are LlamaGen's except ``disc_start``)."""
        if not isinstance(model, VQGAN):
            raise TypeError(f"VQGANModule trains a VQGAN, got {type(model).__name__}; use TokenizerModule for others")
        super().__init__(model, discriminator, perceptual, disc_start=disc_start, **kwargs)
        self.ignore_aux_weight, self.disc_start_counts_from_one = ignore_aux_weight, disc_start_counts_from_one
        if swapped_bce_arguments:
            g_family = kwargs.get("adversarial_loss", "hinge")
            if g_family == "non_saturating":
                self.g_loss_fn = SWAPPED_BCE[1]
            if (kwargs.get("disc_adversarial_loss") or g_family) == "non_saturating":
                self.d_loss_fn = SWAPPED_BCE[0]

    def aux_term_weight(self) -> float:
        return 1.0 if self.ignore_aux_weight else super().aux_term_weight()

    @property
    def gan_start_step(self) -> int:
        return max(0, self.disc_start - 1) if self.disc_start_counts_from_one else self.disc_start
