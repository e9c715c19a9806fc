"""`FitProgressBar`: the training progress bar of every ``tokenforge fit``.

Lightning's default bar (Rich when installed) writes ``Epoch 3/-2`` when ``max_epochs`` is -1, which is how
every tokenforge config runs (training is bounded by ``max_steps``). This bar counts what bounds the run:

- ``max_steps`` set: ``Epoch 3: step 120/500`` — optimiser steps (``global_step``, the unit of ``max_steps``;
  two per batch for GAN tokenizers once the discriminator is on), across epochs.
- otherwise: ``Epoch 3`` (``Epoch 3/9`` with ``max_epochs`` 10) over the batches of the epoch.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

STEP_FORMAT = "{desc}step {n_fmt}/{total_fmt} |{bar}| [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


def epoch_label(trainer: pl.Trainer) -> str:
    """``Epoch N`` (0-based, as Lightning's checkpoints name epochs), with the last epoch when one is set."""
    last = (trainer.max_epochs or 0) - 1
    return f"Epoch {trainer.current_epoch}" + (f"/{last}" if last >= 0 and trainer.max_steps <= 0 else "")


class FitProgressBar(TQDMProgressBar):
    """A tqdm bar over optimiser steps when ``max_steps`` bounds the run, else over the epoch's batches."""

    @staticmethod
    def counts_steps(trainer: pl.Trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        bar = self.train_progress_bar
        bar.set_description(epoch_label(trainer), refresh=False)
        if self.counts_steps(trainer):
            bar.bar_format, bar.unit = STEP_FORMAT, "step"
            bar.total = trainer.max_steps
            bar.n = bar.last_print_n = trainer.global_step
        if not bar.disable:
            bar.refresh()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.counts_steps(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        step = trainer.global_step
        if (batch_idx + 1) % self.refresh_rate == 0 or step >= trainer.max_steps:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()
