"""Lightning distillation of LinFusion (official ``src/train/distill.py`` recipe).

Teacher = the base UNet with its softmax self-attention; student = a copy with LinFusion mounted on every
``attn1``. Loss = MSE(student, eps or v target) + 0.5 MSE(student, teacher) + 0.5 mean per-layer attn1 MSE;
only ``self.model`` (the LinFusion modules) is optimised (AdamW, lr 1e-4, no schedule, as official). Images
(``batch["image"]`` in [-1, 1]) are resized to ``resolution`` (bicubic, square, aspect not kept, as official),
VAE-encoded (latent mean + std noise, x scaling_factor); captions (``batch["txt"]``, empty if absent) go
through the text encoder. The frozen parts are kept outside the module tree so checkpoints hold only LinFusion.

The defaults, in YAML (the one way to train, `tokenforge.training`; no ``lr_scheduler``, no clipping)::

    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 1.0e-4, weight_decay: 0.0}

The module arguments ``lr`` and ``weight_decay`` are deprecated aliases laid over that callable.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from tokenforge.generators.linfusion.components import Components, load_components, tiny_components
from tokenforge.generators.linfusion.distill import WEIGHTS, distill_losses
from tokenforge.generators.linfusion.linfusion import LinFusion, default_modules_list
from tokenforge.training import TrainingModule, optimizer_with

#: official distill.py: AdamW lr 1e-4 (torch's betas), no weight decay, no schedule
DEFAULT_OPTIMIZER = functools.partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.0)


class LinFusionDistillModule(TrainingModule):
    """Distil LinFusion from a local SD folder (``base``) or from tiny random components (the ``tiny`` dict)."""

    def __init__(
        self,
        base: str | None = None,
        tiny: dict[str, Any] | None = None,
        mid_dim_scale: int | None = None,
        pretrained_linfusion: str | None = None,
        resolution: int | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        gradient_clip_val: float | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        loss_weights: dict[str, float] | None = None,
        chunk_size: int | None = None,
    ) -> None:
        if (base is None) == (tiny is None):
            raise ValueError("give exactly one of base (a local diffusers SD folder) or tiny (component configs)")
        parts = load_components(base) if base is not None else tiny_components(**tiny)
        parts.freeze()
        teacher = copy.deepcopy(parts.unet)
        if pretrained_linfusion is not None:
            model = LinFusion.load_official(pretrained_linfusion, chunk_size=chunk_size)
        else:
            model = LinFusion(default_modules_list(parts.unet, mid_dim_scale), chunk_size=chunk_size)
        super().__init__(model, optimizer=optimizer_with(optimizer, DEFAULT_OPTIMIZER, type(self).__name__, lr=lr,
                                                         weight_decay=weight_decay),
                         lr_scheduler=lr_scheduler, gradient_clip_val=gradient_clip_val)
        model.mount_to(parts.unet)
        model.requires_grad_(True)
        self._frozen = [parts, teacher]  # a list: not registered, not in state_dict
        self.names = [m["module_name"] for m in model.modules_list]
        self.resolution = resolution
        self.loss_weights = {**WEIGHTS, **(loss_weights or {})}

    @property
    def parts(self) -> Components:
        return self._frozen[0]

    @property
    def teacher(self) -> torch.nn.Module:
        return self._frozen[1]

    def on_fit_start(self) -> None:
        for m in (self.parts.unet, self.parts.vae, self.parts.text_encoder, self.teacher):
            m.to(self.device)

    on_validation_start = on_fit_start

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images = batch["image"].to(self.device)
        if self.resolution is not None and images.shape[-2:] != (self.resolution, self.resolution):
            images = F.interpolate(images, size=(self.resolution,) * 2, mode="bicubic", align_corners=False)
        captions = batch.get("txt") or [""] * len(images)
        captions = [c.decode() if isinstance(c, bytes) else str(c) for c in captions]
        parts = self.parts
        with torch.no_grad():
            latents = parts.vae.encode(images).latent_dist.sample() * parts.vae.config.scaling_factor
            context = parts.encode_text(captions, self.device)
        noise = torch.randn_like(latents)
        steps = parts.scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (len(latents),), device=self.device)
        d = distill_losses(parts.unet, self.teacher, self.names, parts.scheduler, latents, noise, t, context,
                           weights=self.loss_weights)
        return {"loss": d.total, "loss_noise": d.loss_noise, "loss_kd": d.loss_kd, "loss_feat": d.loss_feat}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        out = self.losses(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, prog_bar=True, batch_size=len(batch["image"]))
        return out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self.losses(batch)
        self.log_dict({f"val/{k}": v for k, v in out.items()}, batch_size=len(batch["image"]))
