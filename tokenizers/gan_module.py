"""`GANModule`: the one generator/discriminator training step of tokenforge (manual optimisation).

Every GAN-trained tokenizer (autoencoders in `tokenforge.tokenizers.base.TokenizerModule`, WavTokenizer) runs
this step; a subclass supplies only its losses and its networks:

- ``training_forward(batch) -> (x, out)``: one generator forward per batch, shared by both phases;
- ``generator_losses(x, out, adversarial) -> {"loss": total, term: value, ...}``;
- ``discriminator_losses(x, out) -> {"loss": total, ...}`` (use ``out``'s output detached);
- ``discriminator_parameters()``: what the second optimiser trains (none: no GAN, one optimiser).

Per batch: one forward, then the generator update and, once the GAN is on, the discriminator update, in the
order ``discriminator_first`` says (False: generator first, as taming / LlamaGen; True: discriminator first, so
the generator is judged by the updated discriminator, as WavTokenizer / Vocos). Each update clears the
gradients, backpropagates, clips the gradient norm (``gradient_clip_val`` / ``disc_gradient_clip_val``, through
`TrainingModule.clip_and_step`, the one clipping of tokenforge; the norm before clipping is logged as
``train/grad_norm_g`` / ``train/grad_norm_d``) and steps its optimiser and then its scheduler (per batch; the
discriminator's only on batches where it stepped). Schedules that need the run length get it in generator steps
(`run_length`).

The GAN start counts GENERATOR steps with a counter of our own (``generator_step``, a buffer, so it is saved
in checkpoints and a resumed run continues it): the GAN is on once ``generator_step >= disc_start``. Lightning's
``global_step`` counts every optimiser step (two per batch once the GAN is on, Lightning #17958), so
``trainer.max_steps`` = generator steps before ``disc_start`` + 2 x those after. ``gan_weight`` is the factor
subclasses put on their adversarial and feature-matching weights: 0 before the start, then rising linearly to 1
over ``gan_ramp_steps`` generator steps (1 at once when 0, the papers' recipe).

``optimizer`` / ``disc_optimizer`` are callables ``params -> Optimizer`` (YAML ``class_path`` + ``init_args``);
None means Adam(lr 1e-4, betas (0.9, 0.95)), the taming / LlamaGen default. ``lr_scheduler`` /
``disc_lr_scheduler``: callables ``optimizer -> scheduler``, stepped once per batch. Each backward pass uses only
the generator's or only the discriminator's parameters, so DDP is told to allow that (``partial_backward``).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from tokenforge.training import TrainingModule


def default_adam(params: Any) -> torch.optim.Optimizer:
    """The default optimiser of taming / LlamaGen / TokenFlow: Adam lr 1e-4, betas (0.9, 0.95), no weight decay."""
    return torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.95))


class GANModule(TrainingModule):
    """Generator/discriminator step, GAN start and ramp, clipping, schedulers; see the module docstring."""

    partial_backward = True  # generator and discriminator steps: DDP must allow unused parameters

    def __init__(
        self,
        model: nn.Module,
        *,
        disc_start: int = 0,
        gan_ramp_steps: int = 0,
        discriminator_first: bool = False,
        gradient_clip_val: float | None = None,
        disc_gradient_clip_val: float | None = None,
        optimizer: OptimizerCallable | None = None,
        disc_optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        disc_lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(model, optimizer=optimizer or default_adam, lr_scheduler=lr_scheduler,
                         gradient_clip_val=gradient_clip_val)
        if disc_start < 0 or gan_ramp_steps < 0:
            raise ValueError(f"disc_start and gan_ramp_steps must be >= 0, got {disc_start} and {gan_ramp_steps}")
        self.automatic_optimization = False
        self.disc_start, self.gan_ramp_steps = int(disc_start), int(gan_ramp_steps)
        self.discriminator_first = bool(discriminator_first)
        self.disc_gradient_clip_val = disc_gradient_clip_val
        self.disc_optimizer_fn, self.disc_lr_scheduler_fn = disc_optimizer or default_adam, disc_lr_scheduler
        self.register_buffer("generator_step", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ what subclasses provide

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Parameters of the discriminator optimiser; empty means no GAN (the generator trains alone)."""
        return []

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters of the generator optimiser: all of ``model``'s (frozen ones get no gradient, so no update;
        keeping them keeps the optimiser's groups, and so the checkpoints of earlier runs, as they were)."""
        return list(self.model.parameters())

    def training_forward(self, batch: Any) -> tuple[Tensor, Any]:
        """``(x, out)``: the batch's input and the one generator forward both phases share."""
        x = batch if isinstance(batch, Tensor) else batch[0]
        return x, self.model(x)

    def generator_losses(self, x: Tensor, out: Any, adversarial: bool) -> dict[str, Tensor]:
        raise NotImplementedError

    def discriminator_losses(self, x: Tensor, out: Any) -> dict[str, Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------ GAN schedule

    @property
    def has_discriminator(self) -> bool:
        return len(self.discriminator_parameters()) > 0

    @property
    def gan_start_step(self) -> int:
        """Completed generator steps after which the GAN is on (``disc_start``; a subclass may shift it)."""
        return self.disc_start

    @property
    def gan_active(self) -> bool:
        """True once the generator has taken ``gan_start_step`` steps (and there is a discriminator)."""
        return self.has_discriminator and int(self.generator_step) >= self.gan_start_step

    @property
    def gan_weight(self) -> float:
        """0 before the GAN starts; then linear from 1/``gan_ramp_steps`` to 1 (1 at once without a ramp)."""
        done = int(self.generator_step) - self.gan_start_step + 1
        if done <= 0:
            return 0.0
        return 1.0 if not self.gan_ramp_steps else min(1.0, done / self.gan_ramp_steps)

    # ------------------------------------------------------------------ optimisers

    def configure_optimizers(self) -> Any:
        optimizers = [self.make_optimizer(self.optimizer_fn, self.generator_parameters())]
        makers = [self.lr_scheduler_fn]
        disc_params = self.discriminator_parameters()
        if disc_params:
            optimizers.append(self.make_optimizer(self.disc_optimizer_fn, disc_params))
            makers.append(self.disc_lr_scheduler_fn)
        schedulers = [{"scheduler": self.make_scheduler(make, opt), "interval": "step"}
                      for make, opt in zip(makers, optimizers) if make is not None]
        return optimizers, schedulers

    def run_length(self) -> int | None:
        """Generator steps (= scheduler steps) in this run: ``trainer.max_steps`` counts both optimisers' steps,
        one per batch before the GAN start and two after it."""
        total = super().run_length()
        start = self.gan_start_step
        if total is None or not self.has_discriminator or total <= start:
            return total
        return start + (total - start) // 2

    def _optimizers_and_schedulers(self) -> list[tuple[Any, Any]]:
        """``[(optimizer, its scheduler or None)]``, generator first; schedulers matched by their optimiser."""
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        schedulers = self.lr_schedulers()
        schedulers = [] if schedulers is None else schedulers if isinstance(schedulers, list) else [schedulers]
        by_optimizer = {id(s.optimizer): s for s in schedulers}
        return [(opt, by_optimizer.get(id(getattr(opt, "optimizer", opt)))) for opt in optimizers]

    # ------------------------------------------------------------------ the step

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x, out = self.training_forward(batch)
        pairs = self._optimizers_and_schedulers()
        adversarial = self.gan_active and len(pairs) > 1
        g: dict[str, Tensor] = {}
        d: dict[str, Tensor] = {}
        norms: dict[str, Tensor] = {}

        def generator_phase() -> None:
            opt = pairs[0][0]
            with self.toggled_optimizer(opt):
                g.update(self.generator_losses(x, out, adversarial))
                norms["grad_norm_g"] = self.clip_and_step(opt, g["loss"], self.gradient_clip_val or 0.0)

        def discriminator_phase() -> None:
            opt = pairs[1][0]
            with self.toggled_optimizer(opt):
                d.update(self.discriminator_losses(x, out))
                norms["grad_norm_d"] = self.clip_and_step(opt, d["loss"], self.disc_gradient_clip_val or 0.0)

        phases = [generator_phase] + ([discriminator_phase] if adversarial else [])
        for phase in (reversed(phases) if self.discriminator_first else phases):
            phase()
        for i, (_, scheduler) in enumerate(pairs):
            if scheduler is not None and (i == 0 or adversarial):
                scheduler.step()
        self.generator_step += 1
        logs = self.step_logs(x, out, g, d, adversarial)
        logs.update({f"train/{k}": v for k, v in norms.items()})
        self.log_dict(logs, batch_size=x.shape[0])
        self.log("train/loss_g", g["loss"].detach(), prog_bar=True, batch_size=x.shape[0])
        return {k: v.detach() for k, v in g.items()}

    def step_logs(self, x: Tensor, out: Any, g: dict[str, Tensor], d: dict[str, Tensor],
                  adversarial: bool) -> dict[str, Tensor]:
        """What a step logs: ``train/<term>`` per generator term, ``train/d_<term>`` per discriminator term,
        ``train/gan_active`` and, with a ramp, ``train/gan_weight``. Subclasses add their own."""
        logs = {f"train/{k}": v.detach() for k, v in g.items() if k != "loss"}
        logs.update({f"train/d_{k}": v.detach() for k, v in d.items()})
        logs["train/gan_active"] = torch.tensor(float(adversarial))
        if self.gan_ramp_steps:
            logs["train/gan_weight"] = torch.tensor(self.gan_weight)
        return logs
