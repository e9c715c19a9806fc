"""`NonFiniteGuard`: a fit whose loss turns NaN or infinite stops with one line (or skips the batch), and no
checkpoint with non-finite weights is ever written.

Without it Lightning carries on: the optimiser writes NaN into every weight, ``last.ckpt`` saves them and a
generator sampled from it returns token 0 everywhere. The guard checks every loss handed to backward
(``on_before_backward``: automatic and manual optimisation alike, so both optimisers of a GAN). A batch with a
non-finite loss takes no further optimiser step: the gradients are dropped just before each ``optimizer.step``
(optimisers skip parameters without a gradient, so weights, moments and step counts stay as they were).
At the end of that batch:

- ``mode="stop"`` (default) raises `NonFiniteLossError`, a `RunFailedError` (one line, exit code 1) that names
  the global step, the epoch and batch index and the loss terms that are not finite;
- ``mode="skip"`` warns, counts the batch (logged as ``train/nonfinite_skipped``, kept in checkpoints) and
  goes on; learning-rate schedules still advance. It stops all the same when the batch left non-finite
  weights behind (layers that change in the forward pass, e.g. an EMA codebook) or after ``max_consecutive``
  bad batches in a row (non-finite weights make every later loss non-finite).

Every checkpoint save first checks the weights (``on_save_checkpoint``) and refuses non-finite ones, so
neither ``last.ckpt`` nor ``interrupted.ckpt`` can hold them.

Each loss check reads one number back from the device (one synchronisation per backward pass).
Every `TrainingModule` adds a guard in stop mode; to skip instead, give one to the trainer::

    --trainer.callbacks+=tokenforge.nonfinite_guard.NonFiniteGuard --trainer.callbacks.mode=skip
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from tokenforge.errors import RunFailedError

_log = logging.getLogger(__name__)

MODES = ("stop", "skip")
SKIP_HINT = "--trainer.callbacks+=tokenforge.nonfinite_guard.NonFiniteGuard --trainer.callbacks.mode=skip"


class NonFiniteLossError(RunFailedError):
    """A training loss (or the weights) became NaN or infinite; the message names the step and the terms."""


def nonfinite_weights(module: nn.Module, limit: int = 5) -> list[str]:
    """Names of the parameters holding NaN/inf and of the floating buffers holding NaN (up to ``limit``).

    Buffers may hold infinities on purpose (attention masks), so only NaN counts there.
    """
    bad: list[str] = []
    for name, tensor in module.named_parameters():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad.append(name)
    for name, tensor in module.named_buffers():
        if tensor.is_floating_point() and bool(torch.isnan(tensor).any()):
            bad.append(name)
    return bad[:limit] if len(bad) <= limit else [*bad[:limit], f"... {len(bad) - limit} more"]


def _terms(outputs: Any) -> dict[str, Tensor]:
    """The named scalar terms of a training step's output (a tensor is the ``loss``)."""
    if isinstance(outputs, Tensor):
        return {"loss": outputs}
    if isinstance(outputs, dict):
        return {str(k): v for k, v in outputs.items() if isinstance(v, Tensor) and v.numel() == 1}
    return {}


def _describe(value: Tensor) -> str:
    value = float(value.detach().float())
    return "nan" if value != value else ("inf" if value > 0 else "-inf")


class NonFiniteGuard(pl.Callback):
    """Stops (``mode="stop"``) or skips (``mode="skip"``) a batch whose loss is NaN/inf; see the module docstring."""

    def __init__(self, mode: str = "stop", max_consecutive: int = 10) -> None:
        if mode not in MODES:
            raise ValueError(f"NonFiniteGuard mode must be one of {MODES}, got {mode!r}")
        self.mode, self.max_consecutive = mode, int(max_consecutive)
        self.skipped = 0  # batches skipped over the whole run (restored on resume)
        self.consecutive = 0
        self._bad: list[str] = []  # this batch's non-finite losses, as "optimiser i: nan"
        self._steps_in_batch = 0
        self._step_at_start = 0

    # ------------------------------------------------------------------ per batch

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._bad, self._steps_in_batch, self._step_at_start = [], 0, trainer.global_step

    def on_before_backward(self, trainer: pl.Trainer, module: pl.LightningModule, loss: Tensor) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            self._bad.append(f"loss of optimiser step {self._steps_in_batch} = {_describe(loss)}")

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        self._steps_in_batch += 1
        if self._bad:  # no update from a non-finite loss: drop the gradients, the optimiser then skips them
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._bad:
            self.consecutive = 0
            self._log_count(module)
            return
        terms = [f"{k}={_describe(v)}" for k, v in _terms(outputs).items() if not bool(torch.isfinite(v).all())]
        where = (f"non-finite loss at global step {self._step_at_start} (epoch {trainer.current_epoch}, batch "
                 f"{batch_idx}): {', '.join(terms or self._bad)}")
        if self.mode == "stop":
            raise NonFiniteLossError(f"{where}; no optimiser step was taken and no checkpoint written. Lower the "
                                     f"learning rate or check this batch's data (to skip such batches: {SKIP_HINT})")
        self.skipped += 1
        self.consecutive += 1
        weights = nonfinite_weights(module)
        if weights:
            raise NonFiniteLossError(f"{where}; the weights are no longer finite ({', '.join(weights)}), so "
                                     "skipping cannot recover: lower the learning rate or check the data")
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(f"{where}; {self.consecutive} batches in a row had non-finite losses "
                                     f"(max_consecutive={self.max_consecutive}): lower the learning rate or check "
                                     "the data")
        _log.warning("%s; skipped (no optimiser step), %d skipped so far", where, self.skipped)
        self._log_count(module)

    def _log_count(self, module: pl.LightningModule) -> None:
        if self.mode == "skip":  # the running count, at every logging step of a run that may skip
            module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False, batch_size=1)

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        weights = nonfinite_weights(module)
        if weights:
            raise NonFiniteLossError(f"refusing to save a checkpoint at global step {trainer.global_step}: "
                                     f"non-finite weights ({', '.join(weights)}); lower the learning rate or "
                                     "check the data")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
