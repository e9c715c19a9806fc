"""`ECARModule`: trains an `ECAR` (or its `FlowDiT` baseline, or a `MAR`) on latent token shards.

Recipe (chosen where E-CAR is silent, from MAR/FlowAR): AdamW betas (0.9, 0.95), weight decay on matrices
only (none on the diffusion/flow head, as MAR), linear warm-up then constant lr, EMA of the weights
(``ema_decay``; checkpoints then export the EMA model), bf16 through ``trainer.precision: bf16-mixed``, gradient
clipping from the Trainer. Logged: ``train/loss`` and ``val/loss`` (EMA weights when on; the flow loss with a
fixed seed so validation curves are comparable).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tokenforge.generators.ecar.dit import FlowDiT
from tokenforge.generators.ecar.mar import MAR
from tokenforge.generators.ecar.model import ECAR
from tokenforge.training import TrainingModule


class ECARModule(TrainingModule):
    def __init__(self, model: ECAR | FlowDiT | MAR, lr: float = 1e-4, weight_decay: float = 0.02,
                 betas: tuple[float, float] = (0.9, 0.95), warmup_steps: int = 0,
                 ema_decay: float | None = 0.9999) -> None:
        super().__init__(model, ema_decay)
        self.save_hyperparameters(ignore=["model"])

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> Tensor:
        """Mean training loss of ``model`` (the live or the EMA one) on a latent batch (`LatentLoss`)."""
        return model.training_loss(batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.loss(self.model, batch)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["latents"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        model = self.eval_model
        state = torch.random.get_rng_state()
        torch.manual_seed(batch_idx)
        loss = self.loss(model, batch)
        torch.random.set_rng_state(state)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["latents"].shape[0], sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        head = {id(p) for name in ("head", "diffloss") if hasattr(self.model, name)
                for p in getattr(self.model, name).parameters()}
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2 and id(p) not in head]
        no_decay = [p for p in params if p.dim() < 2 or id(p) in head]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        warmup = int(self.hparams.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
