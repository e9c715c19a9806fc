"""`InterruptCheckpoint`: when training stops early, save where it got to, so that a resume is exact.

Periodic checkpoints lose everything since the last one. This callback saves ``interrupted.ckpt`` on Ctrl-C
(SIGINT), on SIGTERM and on an error, into the `ModelCheckpoint` folder (``<default_root_dir>/checkpoints``
when there is none), and logs the whole command that resumes the run. Every `TrainingModule` adds it
(``configure_callbacks``).

A signal does not stop the step it lands in: a Ctrl-C in the middle of an optimiser step would leave weights,
optimiser and loop counters out of step with one another (the weights updated, the step not yet counted), and
a resume from there would shift the learning-rate schedule and validation by one. From ``on_train_start`` on,
SIGINT and SIGTERM only set a flag; the checkpoint is written at the next batch boundary (before the next
batch, after the previous one's EMA update and any validation), the same place a periodic checkpoint
describes, and the fit then ends as Lightning ends on Ctrl-C (exit status 1). A resume from it continues
bit for bit as the uninterrupted run would (tests/test_resume.py). A second Ctrl-C stops at once without
saving. DataLoader workers forked after ``on_train_start`` inherit the flag-setting handler, so a Ctrl-C in
the terminal, which reaches them too, does not kill them under the step.

An error saves what there is (a state inside a step: the resume is not exact). Nothing is saved before the
first optimiser step, after a non-finite loss, or when the weights are not finite. Multi-process runs save
nothing here: saving needs every rank at a barrier, and an interrupted rank may never reach it. They resume
from their periodic checkpoints.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException

_log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InterruptCheckpoint(pl.Callback):
    """Saves the full training state (weights, optimisers, loop position) when ``fit`` is interrupted."""

    def __init__(self, filename: str = "interrupted.ckpt") -> None:
        self.filename = filename
        self.saved: Path | None = None
        self.command: str | None = None  # the resume command that was logged
        self.requested: str | None = None  # the name of the signal that asked to stop
        self._previous: dict[int, Any] = {}
        self._abort = False  # a second signal: stop without saving
        self._pid = os.getpid()  # the process whose handlers these are (forked workers inherit them)

    def folder(self, trainer: pl.Trainer) -> Path:
        callback = trainer.checkpoint_callback
        if callback is not None and getattr(callback, "dirpath", None):
            return Path(callback.dirpath)
        return Path(trainer.default_root_dir) / "checkpoints"

    # ------------------------------------------------------------------ signals

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.requested, self._abort = None, False
        if trainer.world_size > 1 or threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._pid = os.getpid()
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._request_stop)

    def _request_stop(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: keep serving batches; the trainer decides when to stop
        if self.requested is not None:  # pressed again: stop now
            self._abort = True
            self._restore()
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested}: stopping after this training step to save a checkpoint that resumes exactly "
              "(Ctrl-C again stops at once, unsaved)", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.requested is None:
            return
        # between two batches: the last one is complete (its optimiser steps, EMA update and validation)
        reason, self.requested = self.requested, None
        self._restore()
        self.save(trainer, reason)
        self._abort = True  # saved: nothing more to do in on_exception
        if reason == "SIGINT":
            raise KeyboardInterrupt  # Lightning's Ctrl-C path: teardown, then exit status 1
        raise SIGTERMException(1)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._restore()
        if self.requested is not None:
            _log.warning("%s arrived during the last step; training finished", self.requested)

    # ------------------------------------------------------------------ errors

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
        from tokenforge.nonfinite_guard import NonFiniteLossError

        if self._abort or isinstance(exception, NonFiniteLossError):
            return
        if trainer.state.fn != "fit" or trainer.global_step == 0:
            return  # nothing trained yet
        self.save(trainer, type(exception).__name__)

    def save(self, trainer: pl.Trainer, reason: str) -> None:
        """Write ``interrupted.ckpt`` (finite weights only) and log the command that resumes from it."""
        from tokenforge.nonfinite_guard import nonfinite_weights

        if trainer.world_size > 1:
            _log.warning("training stopped (%s) at step %d; not saved (multi-process run): resume from the last "
                         "periodic checkpoint", reason, trainer.global_step)
            return
        bad = nonfinite_weights(trainer.lightning_module)
        if bad:
            _log.warning("training stopped (%s) at step %d; not saved: the weights are not finite (%s)", reason,
                         trainer.global_step, ", ".join(bad))
            return
        path = self.folder(trainer) / self.filename
        try:
            trainer.save_checkpoint(path, weights_only=False)  # the full state, to resume
        except Exception as error:  # never hide the original exception behind a failed save
            _log.warning("training stopped (%s); saving %s failed: %s", reason, path, error)
            return
        self.saved, self.command = path, resume_command(trainer, path)
        _log.warning("training stopped (%s) at step %d; state saved to %s. Resume with:\n  %s", reason,
                     trainer.global_step, path, self.command)


def resume_command(trainer: pl.Trainer, path: Path, argv: list[str] | None = None) -> str:
    """The whole command that resumes this fit from ``path``.

    The command line of a ``tokenforge fit`` (or ``python -m tokenforge fit``) with its ``--ckpt_path``
    replaced; else (a fit started from Python) the config LightningCLI saved in the log folder.
    """
    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 1 and argv[1] == "fit" and Path(argv[0]).name in {"tokenforge", "__main__.py"}:
        return shlex.join(["tokenforge", "fit", *without_ckpt_path(argv[2:]), "--ckpt_path", str(path)])
    config = saved_config(trainer)
    if config is not None:
        return shlex.join(["tokenforge", "fit", "--config", str(config), "--ckpt_path", str(path)])
    return f"the same fit with --ckpt_path {shlex.quote(str(path))} (trainer.fit(..., ckpt_path=...))"


def without_ckpt_path(args: list[str]) -> list[str]:
    """``args`` less any ``--ckpt_path X`` / ``--ckpt_path=X``."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            out.append(arg)
    return out


def saved_config(trainer: pl.Trainer) -> Path | None:
    """The config file LightningCLI's `SaveConfigCallback` wrote for this run, if any."""
    from lightning.pytorch.cli import SaveConfigCallback

    for callback in trainer.callbacks:
        if isinstance(callback, SaveConfigCallback) and trainer.log_dir is not None:
            path = Path(trainer.log_dir) / callback.config_filename
            if path.is_file():
                return path
    return None
