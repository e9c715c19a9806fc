"""Lightning training of VAT on mesh shards (batch: points, normals, queries, occupancy, near).

Loss (spec §2 defaults, from 3DShape2VecSet + VAR; VAT's own weights are not public):
``BCE(uniform) + near_weight * BCE(near-surface) + kl_weight * KL + vq_weight * VQ``, BCE with logits averaged
over each query set. VAT trains the continuous VAE first and the codebook afterwards (200k + 100k steps, §0b): here
``quantize_start`` steps of the continuous path (posterior sample straight to the decoder), then the multi-scale
quantizer is switched on. Validation logs the same terms plus the volume IoU of ``logit >= 0`` on uniform queries.
``schedule: cosine`` decays the learning rate to 0 over ``trainer.max_steps`` (after ``warmup_steps``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from tokenforge.metrics.mesh import occupancy_iou
from tokenforge.tokenizers.vat.model import VAT
from tokenforge.training import TrainingModule, warmup_cosine


def mesh_inputs(batch: dict[str, Tensor], use_normals: bool) -> Tensor:
    for key in ("points", "queries", "occupancy", "near"):
        if key not in batch:
            raise KeyError(f"VAT training reads mesh batches (points, normals, queries, occupancy, near); "
                           f"batch has {sorted(batch)}")
    if use_normals:
        if "normals" not in batch:
            raise KeyError("this VAT uses normals but the batch has no 'normals'")
        return torch.cat([batch["points"], batch["normals"]], dim=-1)
    return batch["points"]


class VATModule(TrainingModule):
    def __init__(self, model: VAT, near_weight: float = 0.1, kl_weight: float = 1e-3, vq_weight: float = 1.0,
                 quantize_start: int = 0, optimizer: OptimizerCallable | None = None,
                 gradient_clip_val: float | None = 1.0, schedule: str = "constant", warmup_steps: int = 0) -> None:
        super().__init__(model)
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
        self.near_weight, self.kl_weight, self.vq_weight = near_weight, kl_weight, vq_weight
        self.quantize_start, self.optimizer_fn = int(quantize_start), optimizer
        self.gradient_clip_val = gradient_clip_val
        self.save_hyperparameters(ignore=["model", "optimizer"])

    def configure_optimizers(self) -> Any:
        params = self.model.parameters()
        optimizer = self.optimizer_fn(params) if self.optimizer_fn is not None else torch.optim.AdamW(params, lr=1e-4)
        if self.hparams.schedule == "constant" and not self.hparams.warmup_steps:
            return optimizer
        total = self.trainer.max_steps if self.hparams.schedule == "cosine" and self.trainer.max_steps > 0 else None
        factor = warmup_cosine(total, self.hparams.warmup_steps)  # cosine over trainer.max_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")

    @property
    def quantizing(self) -> bool:
        return self.global_step >= self.quantize_start

    def losses(self, batch: dict[str, Tensor], quantize: bool) -> dict[str, Tensor]:
        points = mesh_inputs(batch, self.model.use_normals)
        out = self.model(points, batch["queries"], quantize=quantize)
        target, near = batch["occupancy"].to(out.x_hat.dtype), batch["near"].bool()
        bce = F.binary_cross_entropy_with_logits(out.x_hat, target, reduction="none")
        terms = {"bce_vol": bce[~near].mean(), "bce_near": bce[near].mean(), "kl": out.metrics["kl"].mean(),
                 "vq": out.aux_loss}
        terms["loss"] = (terms["bce_vol"] + self.near_weight * terms["bce_near"] + self.kl_weight * terms["kl"]
                         + self.vq_weight * terms["vq"])
        with torch.no_grad():
            logits = out.x_hat.detach()
            terms["iou"] = occupancy_iou(logits[~near].view(len(logits), -1) >= 0,
                                         target[~near].view(len(logits), -1) > 0.5).mean()
        return terms

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        terms = self.losses(batch, self.quantizing)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, prog_bar=False,
                      batch_size=len(batch["points"]))
        return terms["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        terms = self.losses(batch, self.quantizing)
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, batch_size=len(batch["points"]))
