"""`InterruptCheckpoint`: when training stops early, save where it got to.

Periodic checkpoints lose everything since the last one. This callback saves ``interrupted.ckpt`` on Ctrl-C,
on SIGTERM (Lightning turns it into an exception at the next step) and on an error. It writes into the
`ModelCheckpoint` folder, or ``<default_root_dir>/checkpoints`` when there is none, and logs the
``--ckpt_path`` that resumes the run. Every `TrainingModule` adds it (``configure_callbacks``).

It is skipped in multi-process runs: saving there needs every rank at a barrier, and an interrupted rank may
never reach it. Those runs resume from their periodic checkpoints.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl

_log = logging.getLogger(__name__)


class InterruptCheckpoint(pl.Callback):
    """Saves the full training state (weights, optimisers, loop position) when ``fit`` ends with an exception."""

    def __init__(self, filename: str = "interrupted.ckpt") -> None:
        self.filename = filename
        self.saved: Path | None = None

    def folder(self, trainer: pl.Trainer) -> Path:
        callback = trainer.checkpoint_callback
        if callback is not None and getattr(callback, "dirpath", None):
            return Path(callback.dirpath)
        return Path(trainer.default_root_dir) / "checkpoints"

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != "fit" or trainer.global_step == 0:
            return  # nothing trained yet
        reason = type(exception).__name__
        if trainer.world_size > 1:
            _log.warning("training stopped (%s) at step %d; not saved (multi-process run): resume from the last "
                         "periodic checkpoint", reason, trainer.global_step)
            return
        path = self.folder(trainer) / self.filename
        try:
            trainer.save_checkpoint(path, weights_only=False)  # the full state, to resume
        except Exception as error:  # never hide the original exception behind a failed save
            _log.warning("training stopped (%s); saving %s failed: %s", reason, path, error)
            return
        self.saved = path
        _log.warning("training stopped (%s) at step %d; state saved to %s. Resume with: --ckpt_path %s",
                     reason, trainer.global_step, path, path)
