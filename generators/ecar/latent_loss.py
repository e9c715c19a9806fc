"""The held-out loss of the latent generators (`ECAR`, its `FlowDiT` baseline, `MAR`): their training loss.

`ECARModule` trains with `LatentLoss.training_loss`; `tokenforge evaluate` calls `LatentLoss.nll`, the same loss
with the global RNG seeded per batch (noise, time steps, masks), summed over the batch's items.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tokenforge.generators.base import HeldOutLoss


class LatentLoss(HeldOutLoss):
    """Mixin for a module whose ``forward(latents, labels)`` returns its mean training loss."""

    nll_metric = "loss"
    nll_note = "training (diffusion/flow) loss with a seeded RNG per batch; not a likelihood"
    labels_required = False  # MAR embeds class 0 when a batch has no labels

    def training_loss(self, batch: dict[str, Any]) -> Tensor:
        """Mean training loss of a latent batch (``latents`` ``[B, C, H, W]``, optional ``cls`` ``[B]``)."""
        if "latents" not in batch:
            raise KeyError(f"{type(self).__name__} reads batch['latents'] (token shards written with --latents); "
                           f"the batch has {list(batch)}")
        latents = batch["latents"].float()
        labels = batch.get("cls")
        if labels is None and self.labels_required:
            labels = torch.zeros(len(latents), dtype=torch.long, device=latents.device)
        return self(latents, labels)

    def nll(self, batch: dict[str, Any], *, seed: int = 0, **options: Any) -> tuple[Tensor, int]:
        """(training loss x batch size, batch size), the global RNG seeded with ``seed`` and restored after."""
        state = torch.random.get_rng_state()
        torch.manual_seed(int(seed))
        try:
            loss = self.training_loss(batch)
        finally:
            torch.random.set_rng_state(state)
        count = len(batch["latents"])
        return loss.double() * count, count
