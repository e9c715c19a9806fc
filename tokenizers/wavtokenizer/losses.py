"""WavTokenizer / Vocos training losses: log-mel L1, hinge and least-squares GAN terms, feature matching.

The log-mel L1 (`MelLoss`, `MelSpectrogram`, Vocos' front end) lives in `tokenforge.nn.mel`, shared with the
audio metrics' mel distance; it is re-exported here.

GAN conventions here are Vocos' and DAC's, not `tokenforge.tokenizers.losses.adversarial`'s (which follow
taming): hinge D = mean relu(1 - D(y)) + mean relu(1 + D(y_hat)) without the 0.5, hinge G = mean relu(1 - D(y_hat));
each summed over sub-discriminators and then divided by their number (as the official training step does).
DAC: D = sum of mean D(y_hat)^2 + mean (1 - D(y))^2, G = sum of mean (1 - D(y_hat))^2, feature matching the sum
of L1 over layers and sub-discriminators (not averaged).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenforge.nn.mel import MelLoss, MelSpectrogram, hz_to_mel, mel_filterbank, mel_to_hz  # noqa: F401


def hinge_d_terms(real: Sequence[Tensor], fake: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Per sub-discriminator ``(mean relu(1 - D(y)), mean relu(1 + D(y_hat)))``, each ``[n]`` (Vocos
    ``DiscriminatorLoss``' r_losses and g_losses)."""
    pairs = [(F.relu(1 - r).mean(), F.relu(1 + f).mean()) for r, f in zip(real, fake, strict=True)]
    return torch.stack([r for r, _ in pairs]), torch.stack([f for _, f in pairs])


def hinge_d_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    """Vocos ``DiscriminatorLoss`` divided by the number of sub-discriminators."""
    r, f = hinge_d_terms(real, fake)
    return (r + f).sum() / len(r)


def hinge_g_terms(fake: Sequence[Tensor]) -> Tensor:
    """Per sub-discriminator ``mean relu(1 - D(y_hat))``, ``[n]`` (Vocos ``GeneratorLoss``' gen_losses)."""
    return torch.stack([F.relu(1 - f).mean() for f in fake])


def hinge_g_loss(fake: Sequence[Tensor]) -> Tensor:
    """Vocos ``GeneratorLoss`` divided by the number of sub-discriminators."""
    terms = hinge_g_terms(fake)
    return terms.sum() / len(terms)


def feature_matching(real: Sequence[Sequence[Tensor]], fake: Sequence[Sequence[Tensor]]) -> Tensor:
    """Vocos ``FeatureMatchingLoss`` (sum of mean |f(y) - f(y_hat)| over layers) / number of sub-discriminators."""
    total = sum(torch.mean(torch.abs(r - f)) for rs, fs in zip(real, fake, strict=True) for r, f in zip(rs, fs))
    return total / len(real)


def lsgan_d_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    """DAC: sum over sub-discriminators of mean D(y_hat)^2 + mean (1 - D(y))^2."""
    return sum(f.pow(2).mean() + (1 - r).pow(2).mean() for r, f in zip(real, fake, strict=True))


def lsgan_g_loss(fake: Sequence[Tensor]) -> Tensor:
    """DAC: sum over sub-discriminators of mean (1 - D(y_hat))^2."""
    return sum((1 - f).pow(2).mean() for f in fake)


def dac_feature_matching(real: Sequence[Sequence[Tensor]], fake: Sequence[Sequence[Tensor]]) -> Tensor:
    """DAC: sum of L1 over every layer of every sub-discriminator (real features detached)."""
    return sum(F.l1_loss(f, r.detach()) for rs, fs in zip(real, fake, strict=True) for r, f in zip(rs, fs))
