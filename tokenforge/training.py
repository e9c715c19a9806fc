"""The Lightning side of every method: a thin wrapper around one inference module.

As in Vocos, the networks live in a plain ``nn.Module`` (``self.model``) that inference uses on its own;
the Lightning module adds losses, discriminators, optimisers and logging. Checkpoints written by
``tokenforge fit`` carry the inference module's spec, so `tokenforge.hub.from_pretrained(ckpt)` rebuilds
it without Lightning and without unpickling anything.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from tokenforge.config import Configurable
from tokenforge.hub import CKPT_KEY
from tokenforge.interrupt_checkpoint import InterruptCheckpoint
from tokenforge.nonfinite_guard import NonFiniteGuard

MODEL_PREFIX = "model."
RNG_KEY = "tokenforge_rng"


class TrainingModule(pl.LightningModule):
    """Owns ``self.model`` (a Configurable inference module) and records how to rebuild it.

    ``ema_decay`` (generators) keeps an exponential moving average of the weights in ``self.ema``, updated
    after every training batch; it is then what validation should use (`eval_model`) and what checkpoints
    export (``from_pretrained(ckpt)`` returns the EMA weights).

    Checkpoints also carry the random state (torch, CUDA, Python, NumPy), which a resume restores.
    Lightning does not do this by default. With it, a run stopped at a checkpoint and resumed with
    ``--ckpt_path`` continues the same random stream (bandwidth draws, dead-code restarts, label dropout),
    so it ends as the uninterrupted run would, given the same data order (tests/test_resume.py).
    """

    #: True where each backward pass uses only some parameters: a GAN's generator and discriminator steps under
    #: manual optimisation. DDP's default then fails on the first step ("parameters that were not used in
    #: producing the loss"), so `setup` tells a DDP strategy to look for unused parameters.
    partial_backward: bool = False

    def __init__(self, model: Configurable, ema_decay: float | None = None) -> None:
        super().__init__()
        if not isinstance(model, Configurable):
            raise TypeError(f"{type(model).__name__} must be Configurable so checkpoints can rebuild it")
        self.model = model
        self.ema_decay = float(ema_decay or 0.0)
        self.ema = copy.deepcopy(model).requires_grad_(False).eval() if self.ema_decay else None

    def configure_callbacks(self) -> list[pl.Callback]:
        """`InterruptCheckpoint` (Ctrl-C, SIGTERM or an error: save where training got to) and `NonFiniteGuard`
        (a NaN/inf loss stops the fit), each unless the trainer already has one (e.g. a guard in skip mode)."""
        trainer = getattr(self, "_trainer", None)
        present = trainer.callbacks if trainer is not None else []
        return [make() for make in (InterruptCheckpoint, NonFiniteGuard)
                if not any(isinstance(c, make) for c in present)]

    def setup(self, stage: str) -> None:
        if self.partial_backward:
            allow_partial_backward(self.trainer.strategy)

    @property
    def eval_model(self) -> nn.Module:
        """The EMA weights when kept, else the live model."""
        return self.ema.eval() if self.ema is not None else self.model

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            update_ema(self.ema, self.model, self.ema_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        prefix = "ema." if self.ema is not None else MODEL_PREFIX
        checkpoint[CKPT_KEY] = {"spec": self.model.spec(), "prefix": prefix}
        checkpoint[RNG_KEY] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if RNG_KEY in checkpoint:  # checkpoints written before the key existed resume with a fresh stream
            set_rng_state(checkpoint[RNG_KEY])


def rng_state() -> dict[str, Any]:
    """The random state a training step draws from: torch (CPU and this process's CUDA device), Python, NumPy."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # as tensors and numbers: checkpoints load weights-only
    numpy = {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
             "gauss": float(gauss)}
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this process's device only: reading the others would open a CUDA context on every GPU from every rank
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state` (the CUDA state onto this process's current device)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def warmup_cosine(total: int | None, warmup: int = 0, floor: float = 0.0) -> Callable[[int], float]:
    """Step -> LR multiplier for ``LambdaLR``: linear warm-up over ``warmup`` steps, then a cosine from 1 to
    ``floor`` at step ``total`` (held there after it); constant 1 after the warm-up when ``total`` is None."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not total or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def allow_partial_backward(strategy: Any) -> None:
    """Let a DDP strategy wrap a module whose backward passes each use only some parameters.

    Runs before the strategy wraps the model (Lightning calls ``setup`` first). An explicit choice, e.g.
    ``--trainer.strategy ddp_find_unused_parameters_false``, is left as it is.
    """
    from lightning.pytorch.strategies import DDPStrategy

    if isinstance(strategy, DDPStrategy):
        strategy._ddp_kwargs.setdefault("find_unused_parameters", True)


@torch.no_grad()
def update_ema(ema: nn.Module, live: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * live`` for parameters; buffers are copied as they are."""
    for average, current in zip(ema.parameters(), live.parameters()):
        average.lerp_(current.detach().to(average.dtype), 1.0 - decay)
    for average, current in zip(ema.buffers(), live.buffers()):
        average.copy_(current)
