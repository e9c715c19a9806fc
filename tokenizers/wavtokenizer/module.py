"""Lightning training of `WavTokenizer`: manual optimisation, three discriminators, the official loss weights.

Per batch (after ``pretrain_mel_steps`` generator steps; before that only the mel + commitment terms):
1. one generator forward with a ``bandwidth_id`` drawn uniformly from ``[0, num_bandwidths)`` (official);
2. discriminator step: ``L_D = hinge(MPD)/5 + mrd_coeff * hinge(MRD)/3 + LSGAN(DAC)`` on the detached output;
3. generator step against the updated discriminators:
   ``L_G = adv(MPD) + mrd*adv(MRD) + fm(MPD) + mrd*fm(MRD) + 45*mel + 1000*commit + adv(DAC) + fm(DAC)``.
The step itself (order: discriminator first; GAN start at ``pretrain_mel_steps`` generator steps; ramp;
clipping at ``gradient_clip_val`` / ``disc_gradient_clip_val``; optimisers and schedulers) is
`tokenforge.tokenizers.gan_module.GANModule`'s; this module supplies the losses (`generator_losses`,
`discriminator_losses`), the batch's forwards (`training_forward`) and what each optimiser trains.

Optimisers (the one way to train): ``optimizer`` / ``lr_scheduler`` callables from YAML; ``disc_optimizer`` /
``disc_lr_scheduler`` default to the same. The defaults are the official recipe, in YAML::

    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 2.0e-4, betas: [0.9, 0.999], weight_decay: 0.01}
    lr_scheduler:
      class_path: tokenforge.lr_schedulers.WarmupCosineLR
      init_args: {warmup_steps: 0, warmup_from_zero: true}

The cosine spans the run's generator steps unless ``total_steps`` is given (`GANModule.run_length`:
``trainer.max_steps // 2`` when the GAN is on from the start, as the official code; with ``pretrain_mel_steps``
it spans the whole run, where the official ``max_steps // 2`` ends the schedule early). ``learning_rate``, ``disc_learning_rate``, ``betas``, ``weight_decay``, ``num_warmup_steps`` and
``num_training_steps`` are deprecated aliases laid over these callables (older configs and checkpoints).
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

Speed switch ``compile`` (default off; docs/speed.md): the training step is bound by host-side kernel launches
on a GPU (a GAN batch of short_75.yaml issues thousands of small kernels). With ``compile: true`` the training
forwards of the networks named in ``compile_parts`` (default all of `COMPILE_PARTS`: the SEANet encoder, the
Vocos backbone, the mel loss and each discriminator) run through ``torch.compile`` (its options in
``compile_options``, e.g. ``{mode: max-autotune-no-cudagraphs}``), compiled once per crop shape (training crops
are fixed). The quantizer (its EMA update and dead-code restarts are data-dependent) and the iSTFT head stay
eager, and so do validation and inference. The compiled forward skips the model's input checks
(``check_audio``, the bandwidth range check: host syncs every step); the batch comes from the data module.
Compiled and eager steps give the same losses (tests/test_wavtokenizer_compiled_step.py; with inductor, up to the
backbone's dropout masks, which inductor draws from its own generator unless ``fallback_random``). ``compile_parts``
leaves out the FFT users (``mel``, ``mrd``, ``dac``) where inductor cannot compile an FFT backward: on CPU with
torch 2.11 the backward of an STFT fails a stride assertion in inductor's generated code (``_fft_r2c``); the
CPU test uses the ``aot_eager`` backend.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from tokenforge.lr_schedulers import WarmupCosineLR
from tokenforge.tokenizers.base import AutoencoderOutput, Tokens
from tokenforge.tokenizers.gan_module import GANModule
from tokenforge.tokenizers.wavtokenizer import losses as L
from tokenforge.tokenizers.wavtokenizer.discriminators import (
    DACDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
)
from tokenforge.tokenizers.wavtokenizer.model import WavTokenizer
from tokenforge.training import optimizer_with, scheduler_with

#: the official optimisers: AdamW lr 2e-4, betas (0.9, 0.999), weight decay 0.01, for both networks
DEFAULT_OPTIMIZER = functools.partial(torch.optim.AdamW, lr=2e-4, betas=(0.9, 0.999), weight_decay=0.01)
#: the official schedule (transformers' cosine with warm-up, from 0) over ``trainer.max_steps // 2`` batches
DEFAULT_SCHEDULER = functools.partial(WarmupCosineLR, warmup_from_zero=True)


#: the networks ``compile`` can run through torch.compile (`WavTokenizerModule.net`)
COMPILE_PARTS = ("encoder", "backbone", "mel", "mpd", "mrd", "dac")

Judged = tuple[tuple[list[Tensor], list[Tensor]], tuple[list[list[Tensor]], list[list[Tensor]]]]


@dataclass
class Phase:
    """One step's loss terms: unweighted scalars ``terms`` and their ``weights`` (the loss is the weighted sum),
    per-sub-discriminator values ``parts`` (``g_mpd`` ``[5]``, ``mpd_real`` ...) and what each discriminator
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


@dataclass
class Batch:
    """What a batch's training forwards give both steps: the generator step's forward ``out``, the
    ``bandwidth_id`` drawn for the batch and ``fake``, the audio the discriminator step judges (None when it
    does not run)."""

    out: AutoencoderOutput
    bandwidth_id: Tensor
    fake: Tensor | None


def scaled_group_lrs(make: OptimizerCallable) -> OptimizerCallable:
    """An optimiser callable that multiplies each parameter group's lr by its ``lr_scale`` key once built (before
    any scheduler records the base lrs): how ``encoder_lr_scale`` works with any optimiser from YAML."""

    def build(params: Any) -> torch.optim.Optimizer:
        optimizer = make(params)
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        return optimizer

    return build


class WavTokenizerModule(GANModule):
    """Trains ``model``; discriminators left as None are not used (all three by default in the configs). The step is
    `GANModule`'s; this class gives its losses, forwards and parameter choices (module docstring)."""

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
        optimizer: OptimizerCallable | None = None,
        disc_optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        disc_lr_scheduler: LRSchedulerCallable | None = None,
        encoder_lr_scale: float = 1.0,
        gradient_clip_val: float | None = None,
        disc_gradient_clip_val: float | None = None,
        random_bandwidth: bool = True,
        mel_n_fft: int = 1024,
        mel_hop_length: int = 256,
        n_mels: int = 100,
        evaluate_pesq: bool = True,
        train_dac_discriminator: bool = True,
        second_forward: bool = False,
        compile: bool = False,
        compile_options: dict[str, Any] | None = None,
        compile_parts: list[str] | None = None,
        learning_rate: float | None = None,
        disc_learning_rate: float | None = None,
        betas: tuple[float, float] | None = None,
        weight_decay: float | None = None,
        num_warmup_steps: int | None = None,
        num_training_steps: int | None = None,
    ) -> None:
        name = type(self).__name__
        make = optimizer_with(optimizer, DEFAULT_OPTIMIZER, name, lr=learning_rate, betas=betas,
                              weight_decay=weight_decay)
        make_disc = optimizer_with(disc_optimizer if disc_optimizer is not None else make, make, name,
                                   lr=disc_learning_rate)
        schedule = scheduler_with(lr_scheduler, DEFAULT_SCHEDULER, name, warmup_steps=num_warmup_steps,
                                  total_steps=num_training_steps)
        super().__init__(model, disc_start=pretrain_mel_steps, gan_ramp_steps=gan_ramp_steps, discriminator_first=True,
                         gradient_clip_val=gradient_clip_val, disc_gradient_clip_val=disc_gradient_clip_val,
                         optimizer=scaled_group_lrs(make) if encoder_lr_scale != 1.0 else make,
                         disc_optimizer=make_disc, lr_scheduler=schedule,
                         disc_lr_scheduler=disc_lr_scheduler if disc_lr_scheduler is not None else schedule)
        if dac_disc is not None and not train_dac_discriminator and multiperiod_disc is multiresolution_disc is None:
            raise ValueError("train_dac_discriminator=False leaves no discriminator to train (the DAC is the only "
                             "one): give a multi-period or multi-resolution discriminator too")
        self.mpd, self.mrd, self.dac = multiperiod_disc, multiresolution_disc, dac_disc
        self.encoder_lr_scale = float(encoder_lr_scale)
        self.train_dac_discriminator, self.second_forward = bool(train_dac_discriminator), bool(second_forward)
        self.mel_loss = L.MelLoss(model.sample_rate, mel_n_fft, mel_hop_length, n_mels)
        self.compile_training, self.compile_options = bool(compile), dict(compile_options or {})
        self.compile_parts = set(COMPILE_PARTS if compile_parts is None else compile_parts)
        if not self.compile_parts <= set(COMPILE_PARTS):
            raise ValueError(f"compile_parts {sorted(self.compile_parts - set(COMPILE_PARTS))} unknown: choose from "
                             f"{list(COMPILE_PARTS)}")
        self._compiled: dict[str, Any] = {}  # name -> torch.compile wrapper of a network (not a submodule)
        self.save_hyperparameters(ignore=["model", "multiperiod_disc", "multiresolution_disc", "dac_disc",
                                          "optimizer", "disc_optimizer", "lr_scheduler", "disc_lr_scheduler"])

    @property
    def discriminators(self) -> list[torch.nn.Module]:
        return [d for d in (self.mpd, self.mrd, self.dac) if d is not None]

    # ------------------------------------------------------------------ compiled training forwards (``compile``)

    def net(self, name: str, network: Any) -> Any:
        """``network`` itself, or with ``compile`` on, ``name`` in ``compile_parts`` and in training mode, its
        ``torch.compile`` wrapper (built on first use, kept outside the module tree so state-dict keys and
        checkpoints do not change)."""
        if not (self.compile_training and self.training and name in self.compile_parts):
            return network
        if name not in self._compiled:
            self._compiled[name] = torch.compile(network, **self.compile_options)
        return self._compiled[name]

    def model_forward(self, x: Tensor, bandwidth_id: Tensor) -> AutoencoderOutput:
        """The generator's training forward: ``self.model(x, bandwidth_id)``, or with ``compile`` the same
        computation with the encoder and backbone compiled (`net`), no input checks, the rest eager."""
        if not (self.compile_training and self.training):
            return self.model(x, bandwidth_id)
        latent = self.net("encoder", self.model.encoder)(x[:, None])
        q = self.model.quantizer(latent)
        hidden = self.net("backbone", self.model.backbone)(q.quantized, bandwidth_id)
        x_hat = self.model.head(hidden)[..., : x.shape[-1]]
        tokens = Tokens(ids=q.indices, latents=q.quantized,
                        meta={"sample_rate": self.model.sample_rate, "num_samples": int(x.shape[-1])})
        return AutoencoderOutput(x_hat=x_hat, tokens=tokens, aux_loss=q.loss, metrics=q.metrics)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # Lightning's: a copy of __dict__
        state["_compiled"] = {}  # compiled wrappers are rebuilt on first use in copies and unpickled modules
        return state

    # ------------------------------------------------------------------ what the GAN step trains

    def discriminator_parameters(self) -> list[torch.nn.Parameter]:
        """Every discriminator's parameters; the DAC's only with ``train_dac_discriminator`` (ours)."""
        stepped = [d for d in self.discriminators if d is not self.dac or self.train_dac_discriminator]
        return [p for d in stepped for p in d.parameters()]

    def generator_parameters(self) -> list[Any]:
        """One group (the paper; old checkpoints resume), or the encoder in a second group whose lr is scaled by
        ``encoder_lr_scale``. Trainable parameters only, as this module always had, so the optimiser states of
        earlier checkpoints keep their size."""
        params = [p for p in super().generator_parameters() if p.requires_grad]
        if self.encoder_lr_scale == 1.0:
            return params
        encoder = {id(p) for p in self.model.encoder.parameters()}
        return [{"params": [p for p in params if id(p) not in encoder]},
                {"params": [p for p in params if id(p) in encoder], "lr_scale": self.encoder_lr_scale}]

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
                phase.judged[name] = judged = judge(self.net(name, disc), x, x_hat, bandwidth_id)
                real, fake = L.hinge_d_terms(*judged[0])
                phase.parts[f"{name}_real"], phase.parts[f"{name}_fake"] = real, fake
                phase.terms[name] = (real + fake).sum() / len(real)
        if self.dac is not None:
            phase.judged["dac"] = judged = judge(self.net("dac", self.dac), x, x_hat, bandwidth_id)
            phase.terms["dac"] = L.lsgan_d_loss(*judged[0])
        h = self.hparams
        phase.weights = {"mpd": 1.0, "mrd": h.mrd_loss_coeff, "dac": h.dac_loss_coeff}
        return phase

    def generator_phase(self, x: Tensor, x_hat: Tensor, commit: Tensor, bandwidth_id: Tensor,
                        adversarial: bool) -> Phase:
        """The generator step's terms: mel and commitment, and once ``adversarial`` the three discriminators'
        adversarial and feature-matching terms (weights ramped by `gan_weight`)."""
        h = self.hparams
        phase = Phase(terms={"mel": self.net("mel", self.mel_loss)(x_hat, x), "commit": commit},
                      weights={"mel": h.mel_loss_coeff, "commit": h.commit_loss_coeff})
        if adversarial:
            ramp = self.gan_weight
            for name, disc, w in (("mpd", self.mpd, ramp), ("mrd", self.mrd, ramp * h.mrd_loss_coeff)):
                if disc is None:
                    continue
                phase.judged[name] = (_, fake), (real_fmaps, fake_fmaps) = judge(self.net(name, disc), x, x_hat,
                                                                                 bandwidth_id)
                phase.parts[f"g_{name}"] = per_disc = L.hinge_g_terms(fake)
                phase.terms[f"g_{name}"] = per_disc.sum() / len(per_disc)
                phase.terms[f"fm_{name}"] = L.feature_matching(real_fmaps, fake_fmaps)
                phase.weights[f"g_{name}"] = phase.weights[f"fm_{name}"] = w
            if self.dac is not None:
                phase.judged["dac"] = (_, fake), (real_fmaps, fake_fmaps) = judge(self.net("dac", self.dac), x, x_hat,
                                                                                  bandwidth_id)
                phase.terms["g_dac"] = L.lsgan_g_loss(fake)
                phase.terms["fm_dac"] = L.dac_feature_matching(real_fmaps, fake_fmaps)
                phase.weights["g_dac"] = phase.weights["fm_dac"] = ramp * h.dac_loss_coeff
        return phase

    def batch_forwards(self, x: Tensor, bandwidth_id: Tensor,
                       adversarial: bool) -> tuple[AutoencoderOutput, Tensor | None]:
        """A batch's training forwards: ``(out, fake)``, the generator step's forward and the audio the
        discriminator step judges (None when it does not run). Ours: one forward, ``fake`` its output detached.
        ``second_forward`` (official): the discriminator step's own training-mode forward under no_grad comes
        first, then the generator step's, so the EMA codebook is updated twice and the generator step's codes
        come from the once-updated codebook."""
        fake = None
        if adversarial and self.second_forward:
            with torch.no_grad():
                fake = self.model_forward(x, bandwidth_id).x_hat
        out = self.model_forward(x, bandwidth_id)
        if adversarial and fake is None:
            fake = out.x_hat.detach()
        return out, fake

    # ------------------------------------------------------------------ the GAN step's hooks

    def training_forward(self, batch: Any) -> tuple[Tensor, Batch]:
        """The batch's audio and its training forwards (`batch_forwards`) with one ``bandwidth_id`` drawn
        uniformly from ``[0, num_bandwidths)`` (``random_bandwidth``; else row 0)."""
        x = self.inputs(batch)
        n = self.model.num_bandwidths
        bandwidth_id = (torch.randint(0, n, (1,), device=x.device) if self.hparams.random_bandwidth
                        else torch.zeros(1, dtype=torch.long, device=x.device))
        out, fake = self.batch_forwards(x, bandwidth_id, self.gan_active)
        return x, Batch(out, bandwidth_id, fake)

    def generator_losses(self, x: Tensor, out: Batch, adversarial: bool) -> dict[str, Tensor]:
        """`generator_phase`'s named terms and their weighted sum ``"loss"``."""
        return self.generator_phase(x, out.out.x_hat, out.out.aux_loss, out.bandwidth_id, adversarial).named()

    def discriminator_losses(self, x: Tensor, out: Batch) -> dict[str, Tensor]:
        """`discriminator_phase`'s named terms and their weighted sum ``"loss"``."""
        return self.discriminator_phase(x, out.fake, out.bandwidth_id).named()

    def step_logs(self, x: Tensor, out: Batch, g: dict[str, Tensor], d: dict[str, Tensor],
                  adversarial: bool) -> dict[str, Tensor]:
        """The GAN step's logs plus the codebook statistics and the learning rate(s)."""
        logs = super().step_logs(x, out, g, d, adversarial)
        logs.update({f"train/codebook_{k}": v.detach().float() for k, v in out.out.metrics.items()})
        optimizer = self.optimizers()
        optimizer = optimizer[0] if isinstance(optimizer, list) else optimizer
        logs["train/lr"] = torch.tensor(optimizer.param_groups[0]["lr"])
        if self.encoder_lr_scale != 1.0:
            logs["train/lr_encoder"] = torch.tensor(optimizer.param_groups[-1]["lr"])
        return logs

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
