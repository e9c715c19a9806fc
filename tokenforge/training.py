"""The Lightning side of every method: a thin wrapper around one inference module.

As in Vocos, the networks live in a plain ``nn.Module`` (``self.model``) that inference uses on its own;
the Lightning module adds losses, discriminators, optimisers and logging. Checkpoints written by
``tokenforge fit`` carry the inference module's spec, so `tokenforge.hub.from_pretrained(ckpt)` rebuilds
it without Lightning and without unpickling anything.

One way to train (every module, every method):

- ``optimizer``: a callable ``params -> Optimizer`` (Lightning's ``OptimizerCallable``; in YAML a ``class_path`` +
  ``init_args`` block, e.g. ``torch.optim.AdamW`` with ``{lr: 1.0e-4, betas: [0.9, 0.95], weight_decay: 0.05}``),
  applied to `parameter_groups` (default: every trainable parameter; generators override it for decay /
  no-decay groups: a group without its own ``weight_decay`` takes the optimiser's). Each module's docstring gives
  its default as that YAML block.
- ``lr_scheduler``: a callable ``optimizer -> scheduler`` (``LRSchedulerCallable``), stepped once per optimiser
  step. Schedules that need the run length (`tokenforge.lr_schedulers.WarmupCosineLR`) get it from
  `run_length` (``trainer.max_steps``) when their YAML leaves ``total_steps`` unset.
- ``gradient_clip_val``: the gradient-norm limit. ONE function clips: `clip_gradient_norm` (returns the norm
  before clipping). Automatic optimisation reaches it through `configure_gradient_clipping` (the module's value,
  else the Trainer's ``gradient_clip_val``); manual optimisation (GANs) calls `clip` or `clip_and_step`.
- ``fused_on_cuda`` (class attribute): build the optimiser fused when the parameters are on CUDA, nothing is
  clipped and the optimiser's ``fused`` is left unset (with 16-bit mixed precision Lightning does not unscale a
  fused optimiser's gradients before clipping, so clipping turns it off).

Modules with several optimisers (GANs) build each through `make_optimizer` / `make_scheduler` and update with
`clip_and_step`; where their run is counted in other steps than the Trainer's (a GAN's generator steps) they
override `run_length`.
"""

from __future__ import annotations

import copy
import functools
import random
import warnings
from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.fsdp import shard_if_asked
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

    #: Build the optimiser fused on CUDA when nothing is clipped and its ``fused`` is left unset (see the module
    #: docstring); on where a method used fused AdamW before the one way to train.
    fused_on_cuda: bool = False

    def __init__(self, model: Configurable, ema_decay: float | None = None, *,
                 optimizer: OptimizerCallable | None = None, lr_scheduler: LRSchedulerCallable | None = None,
                 gradient_clip_val: float | None = None) -> None:
        super().__init__()
        if not isinstance(model, Configurable):
            raise TypeError(f"{type(model).__name__} must be Configurable so checkpoints can rebuild it")
        self.model = model
        self.ema_decay = float(ema_decay or 0.0)
        self.ema = copy.deepcopy(model).requires_grad_(False).eval() if self.ema_decay else None
        self.optimizer_fn = optimizer if optimizer is not None else functools.partial(torch.optim.AdamW, lr=1e-4)
        self.lr_scheduler_fn = lr_scheduler
        self.gradient_clip_val = gradient_clip_val

    # ------------------------------------------------------------------ optimisation (the one way)

    def parameter_groups(self) -> list[Any]:
        """What the optimiser trains: every trainable parameter (frozen parts and the EMA copy are not)."""
        return [p for p in self.parameters() if p.requires_grad]

    def run_length(self) -> int | None:
        """Optimiser steps in this run, for schedules that need it: ``trainer.max_steps`` (None when unset)."""
        trainer = self._trainer
        return trainer.max_steps if trainer is not None and trainer.max_steps and trainer.max_steps > 0 else None

    def clip_value(self) -> float | None:
        """The gradient-norm limit in force: the module's ``gradient_clip_val``, else the Trainer's."""
        if self.gradient_clip_val is not None:
            return self.gradient_clip_val
        return getattr(self._trainer, "gradient_clip_val", None)

    def make_optimizer(self, make: OptimizerCallable, params: Any) -> torch.optim.Optimizer:
        """``make(params)``, fused on CUDA where `fused_on_cuda` asks for it (see the module docstring)."""
        fusable = isinstance(make, functools.partial) and "fused" in make.keywords and make.keywords["fused"] is None
        if self.fused_on_cuda and fusable and self.device.type == "cuda" and not self.clip_value():
            return make(params, fused=True)
        return make(params)

    def make_scheduler(self, make: LRSchedulerCallable | None, optimizer: torch.optim.Optimizer) -> Any:
        """``make(optimizer)`` (None without one), given the run length when it asks for it (`run_length`)."""
        if make is None:
            return None
        scheduler = make(optimizer)
        if hasattr(scheduler, "set_run_length"):
            scheduler.set_run_length(self.run_length())
        return scheduler

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(self.optimizer_fn, self.parameter_groups())
        scheduler = self.make_scheduler(self.lr_scheduler_fn, optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Automatic optimisation: clip with `clip_gradient_norm` (the module's limit, else the Trainer's);
        the Trainer's ``gradient_clip_algorithm: value`` clips each gradient element instead."""
        limit = self.gradient_clip_val if self.gradient_clip_val is not None else gradient_clip_val
        if not limit:
            return
        if gradient_clip_algorithm == "value":  # a str enum in Lightning
            torch.nn.utils.clip_grad_value_(optimizer_parameters(optimizer), limit)
        else:
            self.clip(optimizer, limit)

    def clip(self, optimizer: Any, max_norm: float | None = None) -> Tensor:
        """Clip the gradient norm of ``optimizer``'s parameters to ``max_norm`` (default: `clip_value`; 0 or
        None: measure only). Returns the norm before clipping. Manual optimisation calls it after
        ``manual_backward`` (with 16-bit mixed precision the gradients are then still scaled: use bf16)."""
        limit = self.clip_value() if max_norm is None else max_norm
        return clip_gradient_norm(optimizer_parameters(optimizer), limit)

    def clip_and_step(self, optimizer: Any, loss: Tensor, max_norm: float | None = None) -> Tensor:
        """One manual-optimisation update: zero the gradients, backpropagate ``loss``, `clip`, step.
        Returns the gradient norm before clipping."""
        optimizer.zero_grad()
        self.manual_backward(loss)
        norm = self.clip(optimizer, max_norm)
        optimizer.step()
        return norm

    # ------------------------------------------------------------------ Lightning hooks

    def configure_callbacks(self) -> list[pl.Callback]:
        """`InterruptCheckpoint` (Ctrl-C, SIGTERM or an error: save where training got to) and `NonFiniteGuard`
        (a NaN/inf loss stops the fit), each unless the trainer already has one (e.g. a guard in skip mode)."""
        trainer = getattr(self, "_trainer", None)
        present = trainer.callbacks if trainer is not None else []
        extra = [EMAUpdate()] if self.ema is not None else []
        return extra + [make() for make in (InterruptCheckpoint, NonFiniteGuard)
                        if not any(isinstance(c, make) for c in present)]

    def configure_model(self) -> None:
        """Shard the networks block by block under `tokenforge.fsdp.FullyShardedStrategy` (FSDP2); else nothing."""
        shard_if_asked(self)

    def setup(self, stage: str) -> None:
        if self.partial_backward:
            allow_partial_backward(self.trainer.strategy)

    @property
    def eval_model(self) -> nn.Module:
        """The EMA weights when kept, else the live model."""
        return self.ema.eval() if self.ema is not None else self.model

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if getattr(self, "_ema_updated", False):  # `EMAUpdate` already did it for this batch
            self._ema_updated = False
        elif self.ema is not None:
            update_ema(self.ema, self.model, self.ema_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        prefix = "ema." if self.ema is not None else MODEL_PREFIX
        checkpoint[CKPT_KEY] = {"spec": self.model.spec(), "prefix": prefix}
        checkpoint[RNG_KEY] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if RNG_KEY in checkpoint:  # checkpoints written before the key existed resume with a fresh stream
            set_rng_state(checkpoint[RNG_KEY])


class EMAUpdate(pl.Callback):
    """Updates a module's EMA at each batch end before any checkpoint callback saves (Lightning runs callbacks,
    `ModelCheckpoint` last, before the module's own ``on_train_batch_end``). Without it a checkpoint saved every
    n steps holds the EMA one update behind the weights, and a run resumed from it no longer matches."""

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if isinstance(module, TrainingModule) and module.ema is not None:
            module.on_train_batch_end(outputs, batch, batch_idx)
            module._ema_updated = True


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


def optimizer_parameters(optimizer: Any) -> list[nn.Parameter]:
    """Every parameter of an optimiser (or of Lightning's wrapper around one), in group order."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def clip_gradient_norm(parameters: Iterable[nn.Parameter], max_norm: float | None) -> Tensor:
    """THE gradient clipping of tokenforge: scale the gradients so their total L2 norm is at most ``max_norm``
    (0 or None: leave them), as ``torch.nn.utils.clip_grad_norm_``. Returns the norm before clipping."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf")).detach()


def decay_groups(parameters: Iterable[nn.Parameter], no_decay: Iterable[nn.Parameter] = ()) -> list[dict[str, Any]]:
    """Two optimiser groups of the trainable ``parameters``: matrices (dim >= 2), which take the optimiser's weight
    decay, and vectors (norms, biases) plus ``no_decay``, with none (the usual transformer recipe)."""
    params = [p for p in parameters if p.requires_grad]
    skip = {id(p) for p in no_decay}
    return [{"params": [p for p in params if p.dim() >= 2 and id(p) not in skip]},
            {"params": [p for p in params if p.dim() < 2 or id(p) in skip], "weight_decay": 0.0}]


def optimizer_with(optimizer: OptimizerCallable | None, default: OptimizerCallable, owner: str,
                   **aliases: Any) -> OptimizerCallable:
    """``optimizer`` (``default`` when None) with the deprecated module arguments ``aliases`` that were given (not
    None: ``lr=...``, ``betas=...``, ``weight_decay=...``) laid over its keywords, with a DeprecationWarning."""
    return _with_aliases(optimizer if optimizer is not None else default, owner, "optimizer", aliases)


def scheduler_with(lr_scheduler: LRSchedulerCallable | None, default: LRSchedulerCallable | None, owner: str,
                   **aliases: Any) -> LRSchedulerCallable | None:
    """As `optimizer_with`, for the ``lr_scheduler`` callable (``warmup_steps=...``, ``min_lr_ratio=...``)."""
    return _with_aliases(lr_scheduler if lr_scheduler is not None else default, owner, "lr_scheduler", aliases)


def _with_aliases(make: Any, owner: str, key: str, aliases: dict[str, Any]) -> Any:
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in aliases.items() if v is not None}
    if not given:
        return make
    if make is None:
        raise ValueError(f"{owner}: {', '.join(given)} need a {key}")
    warnings.warn(f"{owner}: {', '.join(given)} as module arguments are deprecated; give them in "
                  f"{key}.init_args", DeprecationWarning, stacklevel=3)
    return functools.partial(make, **given)


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
