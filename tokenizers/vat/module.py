"""Lightning training of VAT on mesh shards (batch: points, normals, queries, occupancy, near).

Loss (spec §2 defaults, from 3DShape2VecSet + VAR; VAT's own weights are not public):
``BCE(uniform) + near_weight * BCE(near-surface) + kl_weight * KL + vq_weight * VQ``, BCE with logits averaged
over each query set. VAT trains the continuous VAE first and the codebook afterwards (200k + 100k steps, §0b): here
``quantize_start`` steps of the continuous path (posterior sample straight to the decoder), then the multi-scale
quantizer is switched on. Validation logs the same terms plus the volume IoU of ``logit >= 0`` on uniform queries.

Optimisation (the one way to train, `tokenforge.training`): ``optimizer`` over every trainable parameter, no
schedule, gradient norm clipped to ``gradient_clip_val`` (1.0; the module's value wins over the Trainer's). The
defaults, in YAML::

    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 1.0e-4}          # torch's betas (0.9, 0.999) and weight decay 0.01
    gradient_clip_val: 1.0

A cosine to 0 over ``trainer.max_steps`` after a warm-up: ``lr_scheduler: {class_path:
tokenforge.lr_schedulers.WarmupCosineLR, init_args: {warmup_steps: 0}}``. The module arguments ``schedule``
(``constant`` / ``cosine``) and ``warmup_steps`` are deprecated aliases that pick that scheduler.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from tokenforge.metrics.mesh import occupancy_iou
from tokenforge.tokenizers.vat.model import VAT
from tokenforge.lr_schedulers import WarmupConstantLR, WarmupCosineLR
from tokenforge.training import TrainingModule, scheduler_with

#: AdamW lr 1e-4 with torch's other defaults (VAT's optimiser settings are not public)
DEFAULT_OPTIMIZER = functools.partial(torch.optim.AdamW, lr=1e-4)


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
                 lr_scheduler: LRSchedulerCallable | None = None, gradient_clip_val: float | None = 1.0,
                 schedule: str | None = None, warmup_steps: int | None = None) -> None:
        if schedule not in (None, "cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
        if lr_scheduler is None and (schedule == "cosine" or warmup_steps):  # a given lr_scheduler wins
            lr_scheduler = functools.partial(WarmupCosineLR if schedule == "cosine" else WarmupConstantLR)
        lr_scheduler = scheduler_with(lr_scheduler, None, type(self).__name__, warmup_steps=warmup_steps or None)
        super().__init__(model, optimizer=optimizer if optimizer is not None else DEFAULT_OPTIMIZER,
                         lr_scheduler=lr_scheduler, gradient_clip_val=gradient_clip_val)
        self.near_weight, self.kl_weight, self.vq_weight = near_weight, kl_weight, vq_weight
        self.quantize_start = int(quantize_start)
        self.save_hyperparameters(ignore=["model", "optimizer", "lr_scheduler"])

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
