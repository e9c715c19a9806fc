"""Lightning's checkpoint loading (``fit/validate/test/predict --ckpt_path``) without unpickling code.

Lightning hands ``weights_only=None`` to ``torch.load``, so whether a ``.ckpt`` may run code depends on the
torch version and on ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``. `SafeCheckpointIO` makes it explicit:
``weights_only=True`` unless the caller passed ``--weights_only false`` (their decision, as ``--trust-pickle``
elsewhere), and a refusal or an unreadable file becomes one `tokenforge.errors.UsageError` line.

Our own checkpoints (``last.ckpt``, ``interrupted.ckpt``) hold tensors, numbers, strings and containers only
(the RNG state is stored as tensors and tuples, `tokenforge.training.rng_state`), so they load weights-only.
`guard_checkpoint_loading(trainer)` installs it on a trainer whose strategy uses Lightning's default
`TorchCheckpointIO` (a plugin the user chose is left alone).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from tokenforge.errors import UsageError


class SafeCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that loads weights-only by default and fails with one line."""

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        if weights_only is False:  # the caller asked for full unpickling (`--weights_only false`)
            return super().load_checkpoint(path, map_location=map_location, weights_only=False)
        if not str(path).startswith(("http://", "https://")) and not Path(path).is_file():
            raise UsageError(f"--ckpt_path {path}: no such checkpoint file; give a .ckpt written by `tokenforge fit`")
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            from tokenforge.hub import unpickling_reason

            reason = unpickling_reason(error)
            raise UsageError(
                f"--ckpt_path {path}: refused, the file holds pickled Python objects and unpickling can execute "
                f"code ({reason}); resume only from checkpoints written by `tokenforge fit`, or pass "
                "--weights_only false if you trust the file"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UsageError(f"--ckpt_path {path}: cannot read it, truncated or not a PyTorch checkpoint ({reason}); "
                             "give an intact .ckpt written by `tokenforge fit`") from None


def guard_checkpoint_loading(trainer: Any) -> Any:
    """Make ``trainer`` load ``--ckpt_path`` through `SafeCheckpointIO`; returns the trainer."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = SafeCheckpointIO()
    return trainer
