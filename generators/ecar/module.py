"""`ECARModule`: trains an `ECAR` (or its `FlowDiT` baseline, or a `MAR`) on latent token shards.

Recipe (chosen where E-CAR is silent, from MAR/FlowAR): AdamW betas (0.9, 0.95), weight decay on matrices
only (none on the diffusion/flow head, as MAR: `parameter_groups`), linear warm-up then constant lr, EMA of the
weights (``ema_decay``; checkpoints then export the EMA model), bf16 through ``trainer.precision: bf16-mixed``,
gradient clipping by ``gradient_clip_val`` (the module's, else the Trainer's). The defaults, in YAML (the one way
to train, `tokenforge.training`)::

    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 1.0e-4, betas: [0.9, 0.95], weight_decay: 0.02}
    lr_scheduler:
      class_path: tokenforge.lr_schedulers.WarmupConstantLR
      init_args: {warmup_steps: 0}

The module arguments ``lr``, ``betas``, ``weight_decay`` and ``warmup_steps`` are deprecated aliases laid over
these callables. Logged: ``train/loss`` and ``val/loss`` (EMA weights when on; the flow loss with a fixed seed
so validation curves are comparable).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from tokenforge.generators.ecar.dit import FlowDiT
from tokenforge.generators.ecar.mar import MAR
from tokenforge.generators.ecar.model import ECAR
from tokenforge.lr_schedulers import WarmupConstantLR
from tokenforge.training import TrainingModule, decay_groups, optimizer_with, scheduler_with

#: MAR / FlowAR: AdamW lr 1e-4, betas (0.9, 0.95), weight decay 0.02 (matrices outside the head only)
DEFAULT_OPTIMIZER = functools.partial(torch.optim.AdamW, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.02)


class ECARModule(TrainingModule):
    def __init__(self, model: ECAR | FlowDiT | MAR, optimizer: OptimizerCallable | None = None,
                 lr_scheduler: LRSchedulerCallable | None = None, gradient_clip_val: float | None = None,
                 lr: float | None = None, weight_decay: float | None = None,
                 betas: tuple[float, float] | None = None, warmup_steps: int | None = None,
                 ema_decay: float | None = 0.9999) -> None:
        name = type(self).__name__
        super().__init__(
            model, ema_decay,
            optimizer=optimizer_with(optimizer, DEFAULT_OPTIMIZER, name, lr=lr, betas=betas, weight_decay=weight_decay),
            lr_scheduler=scheduler_with(lr_scheduler, functools.partial(WarmupConstantLR), name,
                                        warmup_steps=warmup_steps),
            gradient_clip_val=gradient_clip_val)
        self.save_hyperparameters(ignore=["model", "optimizer", "lr_scheduler"])

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> Tensor:
        """Mean training loss of ``model`` (the live or the EMA one) on a latent batch (`LatentLoss`)."""
        return model.training_loss(batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.loss(self.model, batch)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["latents"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        model = self.eval_model
        state = torch.random.get_rng_state()
        torch.manual_seed(batch_idx)
        loss = self.loss(model, batch)
        torch.random.set_rng_state(state)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["latents"].shape[0], sync_dist=True)
        return loss

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Weight decay on matrices only, and none on the diffusion / flow head (MAR)."""
        head = [p for name in ("head", "diffloss") if hasattr(self.model, name)
                for p in getattr(self.model, name).parameters()]
        return decay_groups(self.model.parameters(), no_decay=head)
