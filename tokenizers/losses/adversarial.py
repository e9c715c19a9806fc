"""GAN objectives for tokenizer training: hinge, least-squares and non-saturating losses, feature matching.

Every function takes the discriminator's logits either as one tensor or as a list of tensors (one per
sub-discriminator, as multi-period / multi-resolution discriminators return) and averages over the list.
Conventions follow taming-transformers / LlamaGen: the hinge discriminator loss carries the 0.5 factor,
``0.5 * (mean relu(1 - D(real)) + mean relu(1 + D(fake)))``, and the hinge generator loss is ``-mean D(fake)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Logits = Tensor | Sequence[Tensor]


def _as_list(logits: Logits) -> list[Tensor]:
    items = [logits] if isinstance(logits, Tensor) else list(logits)
    if not items:
        raise ValueError("got an empty list of discriminator logits")
    return items


def _average(per_item: list[Tensor]) -> Tensor:
    return torch.stack(per_item).mean()


def hinge_d_loss(real: Logits, fake: Logits) -> Tensor:
    """0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))."""
    return _average([0.5 * (F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean())
                     for r, f in zip(_as_list(real), _as_list(fake), strict=True)])


def hinge_g_loss(fake: Logits) -> Tensor:
    """-mean D(x_hat)."""
    return _average([-f.mean() for f in _as_list(fake)])


def least_squares_d_loss(real: Logits, fake: Logits) -> Tensor:
    """LSGAN: 0.5 * (mean (D(x) - 1)^2 + mean D(x_hat)^2)."""
    return _average([0.5 * ((r - 1.0).pow(2).mean() + f.pow(2).mean())
                     for r, f in zip(_as_list(real), _as_list(fake), strict=True)])


def least_squares_g_loss(fake: Logits) -> Tensor:
    """LSGAN: mean (D(x_hat) - 1)^2."""
    return _average([(f - 1.0).pow(2).mean() for f in _as_list(fake)])


def non_saturating_d_loss(real: Logits, fake: Logits) -> Tensor:
    """Logistic GAN: 0.5 * (mean softplus(-D(x)) + mean softplus(D(x_hat)))."""
    return _average([0.5 * (F.softplus(-r).mean() + F.softplus(f).mean())
                     for r, f in zip(_as_list(real), _as_list(fake), strict=True)])


def non_saturating_g_loss(fake: Logits) -> Tensor:
    """Logistic GAN, non-saturating generator: mean softplus(-D(x_hat)) = -mean log sigmoid(D(x_hat))."""
    return _average([F.softplus(-f).mean() for f in _as_list(fake)])


def feature_matching_loss(real_features: Sequence[Tensor] | Sequence[Sequence[Tensor]],
                          fake_features: Sequence) -> Tensor:
    """Mean over layers (and sub-discriminators) of L1(D_l(x), D_l(x_hat)); the real features are detached."""
    def flat(feats: Sequence) -> list[Tensor]:
        out: list[Tensor] = []
        for f in feats:
            out.extend(flat(f) if isinstance(f, (list, tuple)) else [f])
        return out

    real, fake = flat(real_features), flat(fake_features)
    if len(real) != len(fake) or not real:
        raise ValueError(f"feature matching needs the same non-zero number of layers, got {len(real)} and {len(fake)}")
    return _average([F.l1_loss(f, r.detach()) for r, f in zip(real, fake)])


def swapped_bce_d_loss(real: Logits, fake: Logits) -> Tensor:
    """LlamaGen's ``non_saturating_d_loss`` as written: ``0.5 * (mean BCE(1, D(x)) + mean BCE(0, D(x_hat)))`` with
    ``binary_cross_entropy_with_logits(input=constant, target=logits)`` (arguments swapped). The real term is
    ``1 + log(1 + e^-1) - mean D(x)``, the fake term the constant log 2 (no gradient). Only for parity."""
    return _average([0.5 * (F.binary_cross_entropy_with_logits(torch.ones_like(r), r)
                            + F.binary_cross_entropy_with_logits(torch.zeros_like(f), f))
                     for r, f in zip(_as_list(real), _as_list(fake), strict=True)])


def swapped_bce_g_loss(fake: Logits) -> Tensor:
    """LlamaGen's ``non_saturating_gen_loss`` as written: ``mean BCE(input=1, target=D(x_hat))`` =
    ``1 + log(1 + e^-1) - mean D(x_hat)``, i.e. the hinge generator loss plus a constant. Only for parity."""
    return _average([F.binary_cross_entropy_with_logits(torch.ones_like(f), f) for f in _as_list(fake)])


SWAPPED_BCE = (swapped_bce_d_loss, swapped_bce_g_loss)

GAN_LOSSES: dict[str, tuple[Callable[[Logits, Logits], Tensor], Callable[[Logits], Tensor]]] = {
    "hinge": (hinge_d_loss, hinge_g_loss),
    "least_squares": (least_squares_d_loss, least_squares_g_loss),
    "non_saturating": (non_saturating_d_loss, non_saturating_g_loss),
    "vanilla": (non_saturating_d_loss, non_saturating_g_loss),  # taming / LlamaGen's name for the logistic D loss
}


def gan_losses(name: str) -> tuple[Callable[[Logits, Logits], Tensor], Callable[[Logits], Tensor]]:
    """``(discriminator_loss, generator_loss)`` for ``name`` in hinge | least_squares | non_saturating | vanilla."""
    if name not in GAN_LOSSES:
        raise ValueError(f"unknown adversarial loss {name!r}; choose one of {', '.join(GAN_LOSSES)}")
    return GAN_LOSSES[name]
