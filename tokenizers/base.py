"""The Tokenizer contract: data in, tokens out, and back.

Every tokenizer is an inference ``nn.Module`` (this file's `Tokenizer`) plus a Lightning module that trains
it. ``encode`` returns `Tokens`; ``decode`` inverts it; ``forward`` is the training pass and returns an
`AutoencoderOutput` that the shared training step turns into losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tokenforge.config import Configurable


@dataclass
class Tokens:
    """What a tokenizer emits and a generator produces.

    ``ids``: LongTensor ``[B,h,w]`` (grid), ``[B,L]`` (sequence) or a list of per-scale tensors (scales).
    ``latents``: continuous codes, when the method has them. ``lengths``: per-sample valid lengths for
    flexible-length tokenizers. ``meta``: facts a decoder needs (sample rate, scales, image size...).
    """

    ids: Tensor | list[Tensor] | None = None
    latents: Tensor | None = None
    lengths: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Tokens:
        ids = [t.to(device) for t in self.ids] if isinstance(self.ids, list) else _maybe_to(self.ids, device)
        return Tokens(ids, _maybe_to(self.latents, device), _maybe_to(self.lengths, device), dict(self.meta))

    @property
    def batch_size(self) -> int:
        first = self.ids[0] if isinstance(self.ids, list) else self.ids
        first = first if first is not None else self.latents
        return 0 if first is None else first.shape[0]


def _maybe_to(t: Tensor | None, device: torch.device | str) -> Tensor | None:
    return None if t is None else t.to(device)


@dataclass
class AutoencoderOutput:
    """The training pass of a tokenizer: reconstruction, tokens, and the quantizer's own loss and metrics."""

    x_hat: Tensor
    tokens: Tokens
    aux_loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Tokenizer(Configurable, nn.Module):
    """Inference side of a tokenizer. Subclasses set ``modality`` and ``token_layout``."""

    modality: ClassVar[str]  # "image" | "audio" | "mesh"
    token_layout: ClassVar[str]  # "grid" | "sequence" | "scales"

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tokens:
        raise NotImplementedError

    def decode(self, tokens: Tokens) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> AutoencoderOutput:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> Tokenizer:
        from tokenforge.hub import from_pretrained

        module = from_pretrained(name_or_path, **kwargs)
        if not isinstance(module, cls):
            raise TypeError(f"{name_or_path} holds a {type(module).__name__}, not a {cls.__name__}")
        return module


# ----------------------------------------------------------------------------- training side

import logging  # noqa: E402  (the training half of this file; inference above needs none of it)

import torch.nn.functional as F  # noqa: E402
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable  # noqa: E402

from tokenforge.tokenizers.gan_module import GANModule  # noqa: E402
from tokenforge.tokenizers.losses.adversarial import feature_matching_loss, gan_losses  # noqa: E402

_log = logging.getLogger(__name__)

RECONSTRUCTION_TERMS = ("l1", "l2", "perceptual")  # the "nll" of the adaptive GAN weight


class TokenizerModule(GANModule):
    """`GANModule` + the autoencoder losses, for any `Tokenizer` (VQGAN, KL-VAE, TokenFlow).

    Generator loss = ``l1_weight*|x-x_hat| + l2_weight*(x-x_hat)^2 + perceptual_weight*LPIPS + aux_weight*aux``
    ``+ a * gan_weight * (adversarial_weight*G_adv + feature_matching_weight*FM)``, the adversarial terms only
    once the generator has taken ``disc_start`` steps; ``a`` is 1, or with ``adaptive_weight`` taming's adaptive
    weight ``|grad nll| / (|grad G_adv| + 1e-4)`` at the decoder's last layer, clamped to [0, 1e4] and detached
    (nll = the weighted l1, l2 and perceptual terms; logged as ``adaptive_weight``). From that step on the
    discriminator is trained with ``disc_loss_weight * D_adv(x, sg(x_hat))`` (``disc_adversarial_loss``, by
    default the same family as ``adversarial_loss``). The step itself (order, start, ramp, clipping at
    ``gradient_clip_val`` for both networks, optimisers, schedulers) is `GANModule`'s.

    No perceptual module (``perceptual: null``) means no perceptual term; that is logged once at start.
    Reads ``batch[model.modality]`` (e.g. ``batch["image"]``, float in [-1, 1]) or a bare tensor batch.
    """

    def __init__(
        self,
        model: Tokenizer,
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
        disc_start: int = 0,
        gradient_clip_val: float | None = 1.0,
        optimizer: OptimizerCallable | None = None,
        disc_optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        disc_lr_scheduler: LRSchedulerCallable | None = None,
        disc_adversarial_loss: str | None = None,
        adaptive_weight: bool = False,
        gan_ramp_steps: int = 0,
        discriminator_first: bool = False,
    ) -> None:
        super().__init__(model, disc_start=disc_start, gan_ramp_steps=gan_ramp_steps,
                         discriminator_first=discriminator_first, gradient_clip_val=gradient_clip_val,
                         disc_gradient_clip_val=gradient_clip_val, optimizer=optimizer, disc_optimizer=disc_optimizer,
                         lr_scheduler=lr_scheduler, disc_lr_scheduler=disc_lr_scheduler)
        self.discriminator, self.perceptual = discriminator, perceptual
        self.weights = {"l1": l1_weight, "l2": l2_weight, "perceptual": perceptual_weight, "aux": aux_weight,
                        "adversarial": adversarial_weight, "feature_matching": feature_matching_weight}
        self.disc_loss_weight, self.adaptive_weight = disc_loss_weight, adaptive_weight
        self.g_loss_fn = gan_losses(adversarial_loss)[1]
        self.d_loss_fn = gan_losses(disc_adversarial_loss or adversarial_loss)[0]
        self.save_hyperparameters(ignore=["model", "discriminator", "perceptual", "optimizer", "disc_optimizer",
                                          "lr_scheduler", "disc_lr_scheduler"])
        if perceptual is not None:
            perceptual.requires_grad_(False)

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [] if self.discriminator is None else list(self.discriminator.parameters())

    def on_train_start(self) -> None:
        if self.perceptual is None and self.weights["perceptual"] > 0:
            _log.warning("TokenizerModule: no perceptual network given (perceptual: null), so the perceptual "
                         "term (weight %s) is off; pass tokenforge.tokenizers.losses.perceptual.LPIPS with local "
                         "weight files to enable it", self.weights["perceptual"])

    # ------------------------------------------------------------------ losses

    def inputs(self, batch: Any) -> Tensor:
        if isinstance(batch, Tensor):
            return batch
        key = self.model.modality
        if not isinstance(batch, dict) or key not in batch:
            keys = list(batch) if isinstance(batch, dict) else type(batch).__name__
            raise KeyError(f"{type(self).__name__} reads batch[{key!r}] for a {key} tokenizer; the batch has {keys}")
        return batch[key]

    def training_forward(self, batch: Any) -> tuple[Tensor, AutoencoderOutput]:
        x = self.inputs(batch)
        return x, self.model(x)

    def aux_term_weight(self) -> float:
        """Weight of the quantizer's / KL loss in the generator total (``aux_weight``)."""
        return self.weights["aux"]

    def last_layer(self) -> Tensor:
        """The decoder's output-conv weight, where the adaptive GAN weight compares gradients (taming)."""
        decoder = getattr(self.model, "decoder", None)
        weight = getattr(getattr(decoder, "conv_out", None), "weight", None)
        if weight is None:
            raise AttributeError(f"adaptive_weight needs model.decoder.conv_out.weight; {type(self.model).__name__} "
                                 "has none (override last_layer)")
        return weight

    def adaptive_gan_weight(self, nll: Tensor, g_loss: Tensor) -> Tensor:
        """taming / LlamaGen ``calculate_adaptive_weight``: ``|grad nll| / (|grad g| + 1e-4)`` at `last_layer`,
        clamped to [0, 1e4], detached."""
        layer = self.last_layer()
        nll_grad = torch.autograd.grad(nll, layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, layer, retain_graph=True)[0]
        return (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()

    def generator_losses(self, x: Tensor, out: AutoencoderOutput, adversarial: bool) -> dict[str, Tensor]:
        """Every generator term by name (unweighted) plus ``loss`` (the weighted total)."""
        w, x_hat = self.weights, out.x_hat
        terms: dict[str, Tensor] = {}
        if w["l1"]:
            terms["l1"] = F.l1_loss(x_hat, x)
        if w["l2"]:
            terms["l2"] = F.mse_loss(x_hat, x)
        if w["perceptual"] and self.perceptual is not None:
            terms["perceptual"] = self.perceptual(x_hat, x).mean()
        nll = sum(w[name] * value for name, value in terms.items())
        loss = nll + self.aux_term_weight() * out.aux_loss
        terms["aux"] = out.aux_loss
        if adversarial:
            need_features = bool(w["feature_matching"])
            fake = self.discriminator(x_hat, return_features=True) if need_features else self.discriminator(x_hat)
            gan = 0.0
            if need_features:
                with torch.no_grad():
                    _, real_features = self.discriminator(x, return_features=True)
                fake, fake_features = fake
                terms["feature_matching"] = feature_matching_loss(real_features, fake_features)
                gan = w["feature_matching"] * terms["feature_matching"]
            terms["adversarial"] = self.g_loss_fn(fake)
            gan = gan + w["adversarial"] * terms["adversarial"]
            if self.adaptive_weight and self.training:
                terms["adaptive_weight"] = self.adaptive_gan_weight(nll, terms["adversarial"])
                gan = terms["adaptive_weight"] * gan
            loss = loss + self.gan_weight * gan
        terms["loss"] = loss
        return terms

    def discriminator_losses(self, x: Tensor, out: AutoencoderOutput | Tensor) -> dict[str, Tensor]:
        x_hat = out.x_hat if isinstance(out, AutoencoderOutput) else out
        real, fake = self.discriminator(x), self.discriminator(x_hat.detach())
        mean = lambda t: torch.stack([v.mean() for v in ([t] if isinstance(t, Tensor) else t)]).mean()  # noqa: E731
        return {"loss": self.disc_loss_weight * self.d_loss_fn(real, fake),
                "logits_real": mean(real).detach(), "logits_fake": mean(fake).detach()}

    # ------------------------------------------------------------------ logging, validation

    def step_logs(self, x: Tensor, out: AutoencoderOutput, g: dict[str, Tensor], d: dict[str, Tensor],
                  adversarial: bool) -> dict[str, Tensor]:
        logs = super().step_logs(x, out, g, d, adversarial)
        logs.update({f"train/{k}": v.detach().float() for k, v in out.metrics.items()})
        return logs

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x = self.inputs(batch)
        out = self.model(x)
        mse = (out.x_hat.clamp(-1, 1) - x).pow(2).flatten(1).mean(1) / 4.0  # per-image MSE on the [0, 1] scale
        psnr = (10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()
        logs = {"val/l2": F.mse_loss(out.x_hat, x), "val/aux": out.aux_loss.detach()}
        if self.perceptual is not None:
            logs["val/perceptual"] = self.perceptual(out.x_hat, x).mean()
        logs.update({f"val/{k}": v.detach().float() for k, v in out.metrics.items()})
        self.log_dict(logs, batch_size=x.shape[0])
        self.log("val/psnr", psnr, prog_bar=True, batch_size=x.shape[0])
        return {"psnr": psnr}
