"""Lightning training of `WavTokenizer`: manual optimisation, three discriminators, the official loss weights.

Per batch (after ``pretrain_mel_steps`` generator steps; before that only the mel + commitment terms):
1. one generator forward with a ``bandwidth_id`` drawn uniformly from ``[0, num_bandwidths)`` (official);
2. discriminator step: ``L_D = hinge(MPD)/5 + mrd_coeff * hinge(MRD)/3 + LSGAN(DAC)`` on the detached output;
3. generator step against the updated discriminators:
   ``L_G = adv(MPD) + mrd*adv(MRD) + fm(MPD) + mrd*fm(MRD) + 45*mel + 1000*commit + adv(DAC) + fm(DAC)``.
Both optimisers are AdamW (lr 2e-4, betas (0.9, 0.999), weight decay 0.01) with a cosine schedule (no warm-up)
over ``num_training_steps`` generator steps (default ``trainer.max_steps // 2``, as the official code).
Gradients are clipped inside the step when ``gradient_clip_val`` / ``disc_gradient_clip_val`` are set.
``encoder_lr_scale`` (default 1, the official single learning rate) scales the SEANet encoder's learning rate:
with the official encoder init, Adam moves all encoder outputs by a common offset larger than their
frame-to-frame spread each step and the EMA codebook cannot follow; short_75.yaml now fixes the cause instead
(``SEANetEncoder(init="variance_preserving")``) and keeps 1 (docs/methods/wavtokenizer.md, "Short runs").

``gan_ramp_steps`` (default 0 = the paper: full weights at once) multiplies the adversarial and feature-matching
weights by a factor rising linearly from 0 to 1 over that many batches after the GANs join. Short runs use it:
at the GAN start the DAC feature-matching term alone sends the decoder 1.2-3.2x the gradient of 45 x mel, almost
orthogonal to it, and held-out mel got worse (docs/methods/wavtokenizer.md, "Short runs").

``trainer.max_steps`` counts OPTIMISER steps (Lightning #17958): two per batch once the GAN is on, one per batch
during ``pretrain_mel_steps``. So ``max_steps: 2000`` trains 1000 batches with the default recipe.

The step is built from functions that the training-step parity check (`train_parity`, fixture
``wavtokenizer_train``) calls too: `generator_phase` / `discriminator_phase` return every named term, the
per-sub-discriminator values, logits and feature maps; `batch_forwards` runs a batch's training forwards.

Deliberate deviations from the official code (decoder/experiment.py), each with the official behaviour behind
a switch (all three on reproduce the official step; docs/methods/wavtokenizer.md, "Training recipe"):
- the DAC discriminator used in the losses is the one the optimiser updates. Officially ``VocosExp.__init__``
  wraps one DAC discriminator for the losses and ``WavTokenizer.__init__`` then creates a second one that the
  optimiser holds; that copy never receives a gradient, so the DAC discriminator that shapes the generator
  stays at its initial weights for the whole run (PR #24). ``train_dac_discriminator=False`` reproduces it
  (the DAC stays out of the discriminator optimiser);
- one generator forward per batch, shared by both steps. Officially the discriminator step reruns the
  generator in training mode under no_grad, which updates the EMA codebook a second time per batch (and
  costs a forward); ``second_forward=True`` reproduces it (that forward comes first, as Lightning runs the
  discriminator optimiser first);
- dead codes are restarted after the EMA step (`VectorQuantizer`); officially the expiry writes ``embed``
  before the EMA step overwrites all of ``embed`` in the same call, so it never acts.
  ``VectorQuantizer(dead_code_expiry_overwritten=True)`` reproduces that;
- one ``bandwidth_id`` per batch for both steps (officially each step draws its own);
- real and generated audio go through each discriminator as one stacked batch (`judge`; every layer works per
  sample, so the losses are the same, in one pass instead of two);
- validation logs mel loss, mel / STFT distances and, when ``evaluate_pesq``, wideband PESQ and STOI; UTMOS
  needs local weights and is left to `tokenforge.metrics.audio`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tokenforge.tokenizers.base import AutoencoderOutput
from tokenforge.tokenizers.wavtokenizer import losses as L
from tokenforge.tokenizers.wavtokenizer.discriminators import (
    DACDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
)
from tokenforge.tokenizers.wavtokenizer.model import WavTokenizer
from tokenforge.training import TrainingModule


Judged = tuple[tuple[list[Tensor], list[Tensor]], tuple[list[list[Tensor]], list[list[Tensor]]]]


@dataclass
class Phase:
    """One step's loss terms: unweighted scalars ``terms`` and their ``weights`` (the loss is the weighted sum),
    per-sub-discriminator values ``parts`` (``g_mpd`` ``[5]``, ``d_mpd_real`` ...) and what each discriminator
    family saw, ``judged[name] = ((real_logits, fake_logits), (real_fmaps, fake_fmaps))``."""

    terms: dict[str, Tensor] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    parts: dict[str, Tensor] = field(default_factory=dict)
    judged: dict[str, Judged] = field(default_factory=dict)

    @property
    def loss(self) -> Tensor:
        return sum(self.weights[k] * v for k, v in self.terms.items())

    def named(self) -> dict[str, Tensor]:
        return {**self.terms, "loss": self.loss}


def judge(disc: torch.nn.Module, real: Tensor, fake: Tensor, bandwidth_id: Tensor) -> Judged:
    """One discriminator pass over real and generated audio stacked on the batch axis:
    ``((real_logits, fake_logits), (real_fmaps, fake_fmaps))``.

    Every layer of the three discriminators works per sample, so this equals two separate calls (the official
    code's); one call computes the weight-norm weights once and launches half the kernels (a GAN batch of
    short_75.yaml issues ~8,100 of them with two calls).
    """
    n = real.shape[0]
    logits, fmaps = disc(torch.cat([real, fake]), bandwidth_id)
    return (([t[:n] for t in logits], [t[n:] for t in logits]),
            ([[t[:n] for t in f] for f in fmaps], [[t[n:] for t in f] for f in fmaps]))


class WavTokenizerModule(TrainingModule):
    """Trains ``model``; discriminators left as None are not used (all three by default in the configs)."""

    partial_backward = True  # generator and discriminator steps: DDP must allow unused parameters

    def __init__(
        self,
        model: WavTokenizer,
        multiperiod_disc: MultiPeriodDiscriminator | None = None,
        multiresolution_disc: MultiResolutionDiscriminator | None = None,
        dac_disc: DACDiscriminator | None = None,
        mel_loss_coeff: float = 45.0,
        mrd_loss_coeff: float = 1.0,
        commit_loss_coeff: float = 1000.0,
        dac_loss_coeff: float = 1.0,
        pretrain_mel_steps: int = 0,
        gan_ramp_steps: int = 0,
        learning_rate: float = 2e-4,
        encoder_lr_scale: float = 1.0,
        disc_learning_rate: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.01,
        num_warmup_steps: int = 0,
        num_training_steps: int | None = None,
        gradient_clip_val: float | None = None,
        disc_gradient_clip_val: float | None = None,
        random_bandwidth: bool = True,
        mel_n_fft: int = 1024,
        mel_hop_length: int = 256,
        n_mels: int = 100,
        evaluate_pesq: bool = True,
        train_dac_discriminator: bool = True,
        second_forward: bool = False,
    ) -> None:
        super().__init__(model)
        self.automatic_optimization = False
        self.mpd, self.mrd, self.dac = multiperiod_disc, multiresolution_disc, dac_disc
        self.mel_loss = L.MelLoss(model.sample_rate, mel_n_fft, mel_hop_length, n_mels)
        self.register_buffer("generator_step", torch.zeros((), dtype=torch.long))
        self.save_hyperparameters(ignore=["model", "multiperiod_disc", "multiresolution_disc", "dac_disc"])

    @property
    def discriminators(self) -> list[torch.nn.Module]:
        return [d for d in (self.mpd, self.mrd, self.dac) if d is not None]

    @property
    def gan_active(self) -> bool:
        return bool(self.discriminators) and int(self.generator_step) >= self.hparams.pretrain_mel_steps

    @property
    def gan_weight(self) -> float:
        """Factor on the adversarial and feature-matching weights: 0 before the GANs join, then rising linearly
        to 1 (the paper's weights) over ``gan_ramp_steps`` generator steps (at once when 0, the paper)."""
        ramp = self.hparams.get("gan_ramp_steps", 0)  # .get: checkpoints written before the ramp existed
        if not ramp:
            return 1.0
        return min(1.0, max(0, int(self.generator_step) - self.hparams.pretrain_mel_steps + 1) / ramp)

    # ------------------------------------------------------------------ optimisers

    def configure_optimizers(self) -> Any:
        h = self.hparams
        total = h.num_training_steps
        if total is None:
            max_steps = self.trainer.max_steps if self._trainer is not None else -1
            total = max(1, max_steps // 2) if max_steps and max_steps > 0 else 1_000_000
        schedule = L.cosine_schedule(total, h.num_warmup_steps)
        adamw = dict(betas=tuple(h.betas), weight_decay=h.weight_decay)
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": params}]  # the paper: one group (and old checkpoints resume)
        if h.encoder_lr_scale != 1.0:
            encoder = {id(p) for p in self.model.encoder.parameters()}
            groups = [{"params": [p for p in params if id(p) not in encoder]},
                      {"params": [p for p in params if id(p) in encoder], "lr": h.learning_rate * h.encoder_lr_scale}]
        gen = torch.optim.AdamW(groups, lr=h.learning_rate, **adamw)
        optimizers, schedulers = [gen], [torch.optim.lr_scheduler.LambdaLR(gen, schedule)]
        stepped = [d for d in self.discriminators if d is not self.dac or h.get("train_dac_discriminator", True)]
        disc_params = [p for d in stepped for p in d.parameters()]
        if disc_params:
            disc = torch.optim.AdamW(disc_params, lr=h.disc_learning_rate or h.learning_rate, **adamw)
            optimizers.append(disc)
            schedulers.append(torch.optim.lr_scheduler.LambdaLR(disc, schedule))
        return optimizers, [{"scheduler": s, "interval": "step"} for s in schedulers]

    # ------------------------------------------------------------------ losses

    def inputs(self, batch: Any) -> Tensor:
        if isinstance(batch, Tensor):
            return batch
        if not isinstance(batch, dict) or "audio" not in batch:
            keys = list(batch) if isinstance(batch, dict) else type(batch).__name__
            raise KeyError(f"WavTokenizerModule reads batch['audio'] ([B, samples]); the batch has {keys}")
        return batch["audio"]

    def discriminator_phase(self, x: Tensor, x_hat: Tensor, bandwidth_id: Tensor) -> Phase:
        """The discriminator step's terms on real ``x`` and generated ``x_hat`` (detach it first):
        ``L_D = hinge(MPD)/5 + mrd_coeff * hinge(MRD)/3 + dac_coeff * LSGAN(DAC)``."""
        phase = Phase()
        for name, disc in (("mpd", self.mpd), ("mrd", self.mrd)):
            if disc is not None:
                phase.judged[name] = judged = judge(disc, x, x_hat, bandwidth_id)
                real, fake = L.hinge_d_terms(*judged[0])
                phase.parts[f"d_{name}_real"], phase.parts[f"d_{name}_fake"] = real, fake
                phase.terms[f"d_{name}"] = (real + fake).sum() / len(real)
        if self.dac is not None:
            phase.judged["dac"] = judged = judge(self.dac, x, x_hat, bandwidth_id)
            phase.terms["d_dac"] = L.lsgan_d_loss(*judged[0])
        h = self.hparams
        phase.weights = {"d_mpd": 1.0, "d_mrd": h.mrd_loss_coeff, "d_dac": h.dac_loss_coeff}
        return phase

    def generator_phase(self, x: Tensor, x_hat: Tensor, commit: Tensor, bandwidth_id: Tensor,
                        adversarial: bool) -> Phase:
        """The generator step's terms: mel and commitment, and once ``adversarial`` the three discriminators'
        adversarial and feature-matching terms (weights ramped by `gan_weight`)."""
        h = self.hparams
        phase = Phase(terms={"mel": self.mel_loss(x_hat, x), "commit": commit},
                      weights={"mel": h.mel_loss_coeff, "commit": h.commit_loss_coeff})
        if adversarial:
            ramp = self.gan_weight
            for name, disc, w in (("mpd", self.mpd, ramp), ("mrd", self.mrd, ramp * h.mrd_loss_coeff)):
                if disc is None:
                    continue
                phase.judged[name] = (_, fake), (real_fmaps, fake_fmaps) = judge(disc, x, x_hat, bandwidth_id)
                phase.parts[f"g_{name}"] = per_disc = L.hinge_g_terms(fake)
                phase.terms[f"g_{name}"] = per_disc.sum() / len(per_disc)
                phase.terms[f"fm_{name}"] = L.feature_matching(real_fmaps, fake_fmaps)
                phase.weights[f"g_{name}"] = phase.weights[f"fm_{name}"] = w
            if self.dac is not None:
                phase.judged["dac"] = (_, fake), (real_fmaps, fake_fmaps) = judge(self.dac, x, x_hat, bandwidth_id)
                phase.terms["g_dac"] = L.lsgan_g_loss(fake)
                phase.terms["fm_dac"] = L.dac_feature_matching(real_fmaps, fake_fmaps)
                phase.weights["g_dac"] = phase.weights["fm_dac"] = ramp * h.dac_loss_coeff
        return phase

    def discriminator_losses(self, x: Tensor, x_hat: Tensor, bandwidth_id: Tensor) -> dict[str, Tensor]:
        """`discriminator_phase`'s named terms and their weighted sum ``"loss"``."""
        return self.discriminator_phase(x, x_hat, bandwidth_id).named()

    def generator_losses(self, x: Tensor, x_hat: Tensor, commit: Tensor, bandwidth_id: Tensor,
                         adversarial: bool) -> dict[str, Tensor]:
        """`generator_phase`'s named terms and their weighted sum ``"loss"``."""
        return self.generator_phase(x, x_hat, commit, bandwidth_id, adversarial).named()

    def batch_forwards(self, x: Tensor, bandwidth_id: Tensor,
                       adversarial: bool) -> tuple[AutoencoderOutput, Tensor | None]:
        """A batch's training forwards: ``(out, fake)``, the generator step's forward and the audio the
        discriminator step judges (None when it does not run). Ours: one forward, ``fake`` its output detached.
        ``second_forward`` (official): the discriminator step's own training-mode forward under no_grad comes
        first, then the generator step's, so the EMA codebook is updated twice and the generator step's codes
        come from the once-updated codebook."""
        fake = None
        if adversarial and self.hparams.get("second_forward", False):
            with torch.no_grad():
                fake = self.model(x, bandwidth_id).x_hat
        out = self.model(x, bandwidth_id)
        if adversarial and fake is None:
            fake = out.x_hat.detach()
        return out, fake

    # ------------------------------------------------------------------ steps

    def _update(self, optimizer: Any, loss: Tensor, clip: float | None) -> Tensor:
        optimizer.zero_grad()
        self.manual_backward(loss)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        optimizer.step()
        return norm.detach()

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x = self.inputs(batch)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        n = self.model.num_bandwidths
        bandwidth_id = (torch.randint(0, n, (1,), device=x.device) if self.hparams.random_bandwidth
                        else torch.zeros(1, dtype=torch.long, device=x.device))
        adversarial, gan_weight = self.gan_active, self.gan_weight
        out, fake = self.batch_forwards(x, bandwidth_id, adversarial)
        logs: dict[str, Tensor] = {}
        if adversarial:
            if len(optimizers) > 1:
                with self.toggled_optimizer(optimizers[1]):
                    d = self.discriminator_losses(x, fake, bandwidth_id)
                    logs["train/grad_norm_d"] = self._update(optimizers[1], d["loss"],
                                                             self.hparams.disc_gradient_clip_val)
                schedulers[1].step()
            else:  # the only discriminator is a DAC left untrained (train_dac_discriminator=False): log only
                with torch.no_grad():
                    d = self.discriminator_losses(x, fake, bandwidth_id)
            logs.update({f"train/{k if k != 'loss' else 'loss_d'}": v.detach() for k, v in d.items()})
        with self.toggled_optimizer(optimizers[0]):
            g = self.generator_losses(x, out.x_hat, out.aux_loss, bandwidth_id, adversarial)
            logs["train/grad_norm_g"] = self._update(optimizers[0], g["loss"], self.hparams.gradient_clip_val)
        schedulers[0].step()
        self.generator_step += 1
        logs.update({f"train/{k}": v.detach() for k, v in g.items() if k != "loss"})
        logs.update({f"train/codebook_{k}": v.detach().float() for k, v in out.metrics.items()})
        if adversarial and self.hparams.get("gan_ramp_steps", 0):
            logs["train/gan_weight"] = torch.tensor(gan_weight)
        logs["train/lr"] = torch.tensor(optimizers[0].param_groups[0]["lr"])
        if self.hparams.encoder_lr_scale != 1.0:
            logs["train/lr_encoder"] = torch.tensor(optimizers[0].param_groups[-1]["lr"])
        self.log_dict(logs, batch_size=x.shape[0])
        self.log("train/loss_g", g["loss"].detach(), prog_bar=True, batch_size=x.shape[0])
        return {k: v.detach() for k, v in g.items()}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        from tokenforge.metrics import audio as M

        x = self.inputs(batch)
        out = self.model(x, torch.zeros(1, dtype=torch.long, device=x.device))
        mel = self.mel_loss(out.x_hat, x)
        logs = {"val/mel_loss": mel, "val/commit": out.aux_loss.detach(),
                "val/mel_distance": M.mel_distance(out.x_hat, x, self.model.sample_rate),
                "val/stft_distance": M.stft_distance(out.x_hat, x)}
        logs.update({f"val/codebook_{k}": v.detach().float() for k, v in out.metrics.items()})
        loss = mel + self.hparams.commit_loss_coeff * out.aux_loss.detach()
        if self.hparams.evaluate_pesq:
            scores = M.pesq_stoi(out.x_hat, x, self.model.sample_rate)
            logs.update({f"val/{k}": torch.tensor(v) for k, v in scores.items()})
            if "pesq" in scores:
                loss = loss + (5.0 - scores["pesq"])
        logs["val/loss"] = loss
        self.log_dict(logs, batch_size=x.shape[0])
        return {"mel": mel}
