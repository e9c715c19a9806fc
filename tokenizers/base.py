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

from tokenforge.training import TrainingModule  # noqa: E402

_log = logging.getLogger(__name__)


def _adam(params: Any) -> torch.optim.Optimizer:
    """The default optimiser of taming / LlamaGen / TokenFlow: Adam lr 1e-4, betas (0.9, 0.95), no weight decay."""
    return torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.95))


class TokenizerModule(TrainingModule):
    """The shared autoencoder + GAN training step (manual optimisation), for any `Tokenizer`.

    Generator loss = ``l1_weight*|x-x_hat| + l2_weight*(x-x_hat)^2 + perceptual_weight*LPIPS + aux_weight*aux``
    ``+ adversarial_weight*G_adv + feature_matching_weight*FM`` (adversarial terms only once the generator has
    taken ``disc_start`` steps). The discriminator is trained from that same step on, with
    ``disc_loss_weight * D_adv(x, sg(x_hat))``. Both updates clip the gradient norm to ``gradient_clip_val``.

    ``disc_start`` counts generator steps with a counter of our own (``self.generator_step``, saved in
    checkpoints), not ``trainer.global_step``: with two optimisers Lightning counts every optimiser step
    (Lightning #17958), so ``trainer.max_steps`` = generator steps before ``disc_start`` + 2 x those after.

    ``optimizer`` / ``disc_optimizer`` are callables ``params -> Optimizer`` (YAML: ``class_path`` +
    ``init_args``); None means Adam(lr 1e-4, betas (0.9, 0.95)). Schedulers, when given, step once per batch.
    No perceptual module (``perceptual: null``) means no perceptual term; that is logged once at start.
    Reads ``batch[model.modality]`` (e.g. ``batch["image"]``, float in [-1, 1]) or a bare tensor batch.
    """

    partial_backward = True  # generator and discriminator steps: DDP must allow unused parameters

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
    ) -> None:
        from tokenforge.tokenizers.losses.adversarial import gan_losses

        super().__init__(model)
        self.automatic_optimization = False
        self.discriminator, self.perceptual = discriminator, perceptual
        self.weights = {"l1": l1_weight, "l2": l2_weight, "perceptual": perceptual_weight, "aux": aux_weight,
                        "adversarial": adversarial_weight, "feature_matching": feature_matching_weight}
        self.disc_loss_weight, self.disc_start = disc_loss_weight, int(disc_start)
        self.d_loss_fn, self.g_loss_fn = gan_losses(adversarial_loss)
        self.gradient_clip_val = gradient_clip_val
        self.optimizer_fn, self.disc_optimizer_fn = optimizer or _adam, disc_optimizer or _adam
        self.lr_scheduler_fn, self.disc_lr_scheduler_fn = lr_scheduler, disc_lr_scheduler
        self.register_buffer("generator_step", torch.zeros((), dtype=torch.long))
        self.save_hyperparameters(ignore=["model", "discriminator", "perceptual", "optimizer", "disc_optimizer",
                                          "lr_scheduler", "disc_lr_scheduler"])
        if perceptual is not None:
            perceptual.requires_grad_(False)

    # ------------------------------------------------------------------ optimisers

    def configure_optimizers(self) -> Any:
        optimizers = [self.optimizer_fn(self.model.parameters())]
        if self.discriminator is not None:
            optimizers.append(self.disc_optimizer_fn(self.discriminator.parameters()))
        schedulers = []
        for make, opt in zip((self.lr_scheduler_fn, self.disc_lr_scheduler_fn), optimizers):
            if make is not None:
                schedulers.append({"scheduler": make(opt), "interval": "step"})
        self._scheduled = [make is not None for make in (self.lr_scheduler_fn, self.disc_lr_scheduler_fn)]
        return optimizers, schedulers

    def on_train_start(self) -> None:
        if self.perceptual is None and self.weights["perceptual"] > 0:
            _log.warning("TokenizerModule: no perceptual network given (perceptual: null), so the perceptual "
                         "term (weight %s) is off; pass tokenforge.tokenizers.losses.perceptual.LPIPS with local "
                         "weight files to enable it", self.weights["perceptual"])

    @property
    def gan_active(self) -> bool:
        """True once the generator has taken ``disc_start`` steps (and there is a discriminator)."""
        return self.discriminator is not None and int(self.generator_step) >= self.disc_start

    # ------------------------------------------------------------------ losses

    def inputs(self, batch: Any) -> Tensor:
        if isinstance(batch, Tensor):
            return batch
        key = self.model.modality
        if not isinstance(batch, dict) or key not in batch:
            keys = list(batch) if isinstance(batch, dict) else type(batch).__name__
            raise KeyError(f"{type(self).__name__} reads batch[{key!r}] for a {key} tokenizer; the batch has {keys}")
        return batch[key]

    def generator_losses(self, x: Tensor, out: AutoencoderOutput, adversarial: bool) -> dict[str, Tensor]:
        """Every generator term by name (unweighted) plus ``loss`` (the weighted total)."""
        w, x_hat = self.weights, out.x_hat
        terms: dict[str, Tensor] = {"aux": out.aux_loss}
        if w["l1"]:
            terms["l1"] = F.l1_loss(x_hat, x)
        if w["l2"]:
            terms["l2"] = F.mse_loss(x_hat, x)
        if w["perceptual"] and self.perceptual is not None:
            terms["perceptual"] = self.perceptual(x_hat, x).mean()
        if adversarial:
            need_features = bool(w["feature_matching"])
            fake = self.discriminator(x_hat, return_features=True) if need_features else self.discriminator(x_hat)
            if need_features:
                with torch.no_grad():
                    _, real_features = self.discriminator(x, return_features=True)
                from tokenforge.tokenizers.losses.adversarial import feature_matching_loss
                fake, fake_features = fake
                terms["feature_matching"] = feature_matching_loss(real_features, fake_features)
            terms["adversarial"] = self.g_loss_fn(fake)
        terms["loss"] = sum(w[name] * value for name, value in terms.items())
        return terms

    def discriminator_losses(self, x: Tensor, x_hat: Tensor) -> dict[str, Tensor]:
        real, fake = self.discriminator(x), self.discriminator(x_hat.detach())
        mean = lambda t: torch.stack([v.mean() for v in ([t] if isinstance(t, Tensor) else t)]).mean()  # noqa: E731
        return {"loss": self.disc_loss_weight * self.d_loss_fn(real, fake),
                "logits_real": mean(real).detach(), "logits_fake": mean(fake).detach()}

    # ------------------------------------------------------------------ steps

    def _update(self, optimizer: Any, loss: Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        optimizer.step()

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x = self.inputs(batch)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        adversarial = self.gan_active
        out = self.model(x)
        with self.toggled_optimizer(optimizers[0]):
            g = self.generator_losses(x, out, adversarial)
            self._update(optimizers[0], g["loss"])
        logs = {f"train/{k}": v.detach() for k, v in g.items() if k != "loss"}
        if adversarial:
            with self.toggled_optimizer(optimizers[1]):
                d = self.discriminator_losses(x, out.x_hat)
                self._update(optimizers[1], d["loss"])
            logs.update({f"train/d_{k}": v.detach() for k, v in d.items()})
        schedulers = self.lr_schedulers()
        schedulers = [] if schedulers is None else schedulers if isinstance(schedulers, list) else [schedulers]
        schedulers = iter(schedulers)
        if self._scheduled[0]:
            next(schedulers).step()
        if self._scheduled[1]:
            scheduler = next(schedulers)
            if adversarial:
                scheduler.step()
        self.generator_step += 1
        logs.update({f"train/{k}": v.detach().float() for k, v in out.metrics.items()})
        logs["train/gan_active"] = torch.tensor(float(adversarial))
        self.log_dict(logs, batch_size=x.shape[0])
        self.log("train/loss_g", g["loss"].detach(), prog_bar=True, batch_size=x.shape[0])
        return {k: v.detach() for k, v in g.items()}

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
