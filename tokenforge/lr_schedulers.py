"""Learning-rate schedules that need the run length, as classes a YAML ``lr_scheduler:`` block can name.

``WarmupCosineLR`` (linear warm-up, then a cosine to ``min_lr_ratio``) needs the number of steps of the run.
Left unset (``total_steps: null``), the Lightning module fills it in when it builds the scheduler:
`tokenforge.training.TrainingModule.make_scheduler` calls ``set_run_length(module.run_length())``, which is
``trainer.max_steps`` by default. ``WarmupConstantLR`` is the warm-up alone. Both step once per optimiser step.

    lr_scheduler:
      class_path: tokenforge.lr_schedulers.WarmupCosineLR
      init_args: {warmup_steps: 5000, min_lr_ratio: 0.1}

The step -> factor function is a plain object of numbers (`WarmupCosine`), so ``LambdaLR`` saves its settings in
the scheduler state and checkpoints stay loadable with ``weights_only=True``.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """Step -> LR multiplier: linear warm-up over ``warmup_steps``, then a cosine from 1 to ``min_lr_ratio`` at
    ``total_steps`` (held there after it); constant 1 after the warm-up when ``cosine`` is off or the total is
    unknown (None or not past the warm-up).

    The warm-up factor is ``(step + 1) / warmup_steps`` (the first step already trains), or ``step / warmup_steps``
    with ``warmup_from_zero`` (as transformers' ``get_cosine_schedule_with_warmup``).
    """

    def __init__(self, total_steps: int | None = None, warmup_steps: int = 0, min_lr_ratio: float = 0.0,
                 cosine: bool = True, warmup_from_zero: bool = False) -> None:
        if warmup_steps < 0 or (total_steps is not None and total_steps < 0):
            raise ValueError(f"warmup_steps and total_steps must be >= 0, got {warmup_steps} and {total_steps}")
        self.total_steps = None if total_steps is None else int(total_steps)
        self.warmup_steps, self.min_lr_ratio = int(warmup_steps), float(min_lr_ratio)
        self.cosine, self.warmup_from_zero = bool(cosine), bool(warmup_from_zero)

    def __call__(self, step: int) -> float:
        warmup = self.warmup_steps
        if step < warmup:
            return (step if self.warmup_from_zero else step + 1) / warmup
        total = self.total_steps
        if not self.cosine or not total or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        floor = self.min_lr_ratio
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LambdaLR):
    """Linear warm-up, then a cosine to ``min_lr_ratio`` x the base LR over the run (`WarmupCosine`).

    ``total_steps`` (optimiser steps, warm-up included) None: the training module sets the run length
    (``trainer.max_steps``); when that is unknown too, the LR stays constant after the warm-up.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0, total_steps: int | None = None,
                 min_lr_ratio: float = 0.0, warmup_from_zero: bool = False, last_epoch: int = -1) -> None:
        factor = WarmupCosine(total_steps, warmup_steps, min_lr_ratio, cosine=True, warmup_from_zero=warmup_from_zero)
        super().__init__(optimizer, factor, last_epoch)

    @property
    def factor(self) -> WarmupCosine:
        return self.lr_lambdas[0]

    def set_run_length(self, total_steps: int | None) -> None:
        """Give the run length when ``total_steps`` was left unset (a set value is kept)."""
        if self.factor.total_steps is None and total_steps:
            self.factor.total_steps = int(total_steps)


class WarmupConstantLR(LambdaLR):
    """Linear warm-up over ``warmup_steps`` (factor ``(step + 1) / warmup_steps``), then the base LR."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0, last_epoch: int = -1) -> None:
        super().__init__(optimizer, WarmupCosine(None, warmup_steps, cosine=False), last_epoch)

    @property
    def factor(self) -> WarmupCosine:
        return self.lr_lambdas[0]
