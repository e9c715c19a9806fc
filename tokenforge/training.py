"""The Lightning side of every method: a thin wrapper around one inference module.

As in Vocos, the networks live in a plain ``nn.Module`` (``self.model``) that inference uses on its own;
the Lightning module adds losses, discriminators, optimisers and logging. Checkpoints written by
``tokenforge fit`` carry the inference module's spec, so `tokenforge.hub.from_pretrained(ckpt)` rebuilds
it without Lightning and without unpickling anything.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from tokenforge.config import Configurable
from tokenforge.hub import CKPT_KEY

MODEL_PREFIX = "model."


class TrainingModule(pl.LightningModule):
    """Owns ``self.model`` (a Configurable inference module) and records how to rebuild it."""

    def __init__(self, model: Configurable) -> None:
        super().__init__()
        if not isinstance(model, Configurable):
            raise TypeError(f"{type(model).__name__} must be Configurable so checkpoints can rebuild it")
        self.model = model

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_KEY] = {"spec": self.model.spec(), "prefix": MODEL_PREFIX}
