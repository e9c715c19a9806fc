"""`FlexTokModule`: trains FlexTok (the official release has no training code) with the rectified-flow loss.

One step: frozen VAE latents ``x0`` -> encoder -> FSQ (straight-through) -> nested dropout (``keep_k`` per
sample) -> null condition with probability ``cond_drop_prob`` -> ``sigma ~ sigmoid(N(0, 1))`` (logit-normal,
official ``MinRFNoiseModule(ln=True)``), ``x_t = sigma * noise + (1 - sigma) * x0`` -> decoder velocity,
loss ``MSE(v, noise - x0)``. Optional REPA: given a local ``feature_model`` (images -> ``[B, N, F]`` patch
features, frozen), an MLP projector of the decoder's patch features after block ``repa_layer`` is aligned
to them by negative cosine similarity, weighted ``repa_weight``. The projector lives here, not in the
inference model, so checkpoints stay loadable as plain `FlexTok`.

Nested dropout modes: ``"pow2"`` (keep_k = 2^j, j uniform, as the paper describes), ``"uniform"`` (1..R as the
official MaskedNestedDropout default) and ``"uniform_pow2"`` (half of each). Validation logs PSNR per k in
``val_ks`` (decoded with the model's sampler settings), which is how coarse-to-fine quality is tracked.

Optimisation (the one way to train, `tokenforge.training`): ``optimizer`` over every trainable parameter (the
REPA projector included), no schedule unless ``lr_scheduler`` is given, gradient norm clipped to
``gradient_clip_val`` (1.0; the module's value wins over the Trainer's). The defaults, in YAML::

    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 1.0e-4, weight_decay: 0.01}     # torch's betas (0.9, 0.999)
    gradient_clip_val: 1.0
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from tokenforge.tokenizers.flextok.model import FlexTok
from tokenforge.training import TrainingModule

NESTED_MODES = ("pow2", "uniform", "uniform_pow2")

#: AdamW lr 1e-4, weight decay 0.01, torch's betas (the official release has no training recipe)
DEFAULT_OPTIMIZER = functools.partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.01)


def sample_keep_k(batch: int, registers: int, mode: str = "pow2", device: Any = None,
                  generator: torch.Generator | None = None) -> Tensor:
    """Per-sample number of kept registers ``[B]`` in 1..registers."""
    if mode not in NESTED_MODES:
        raise ValueError(f"nested dropout mode must be one of {NESTED_MODES}, got {mode!r}")
    pow2 = torch.tensor(sorted({2**j for j in range(int(math.log2(registers)) + 1)} | {registers}), device=device)
    pick = torch.randint(len(pow2), (batch,), device=device, generator=generator)
    powers = pow2[pick]
    uniform = torch.randint(1, registers + 1, (batch,), device=device, generator=generator)
    if mode == "pow2":
        return powers
    if mode == "uniform":
        return uniform
    coin = torch.rand(batch, device=device, generator=generator) < 0.5
    return torch.where(coin, powers, uniform)


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Per-sample PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / mse)


class FlexTokModule(TrainingModule):
    def __init__(
        self,
        model: FlexTok,
        nested_dropout: str = "pow2",
        cond_drop_prob: float = 0.1,
        feature_model: nn.Module | None = None,
        feature_dim: int = 1024,
        repa_layer: int = 0,
        repa_weight: float = 1.0,
        val_ks: list[int] | None = None,
        gradient_clip_val: float | None = 1.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(model, optimizer=optimizer if optimizer is not None else DEFAULT_OPTIMIZER,
                         lr_scheduler=lr_scheduler, gradient_clip_val=gradient_clip_val)
        if nested_dropout not in NESTED_MODES:
            raise ValueError(f"nested_dropout must be one of {NESTED_MODES}, got {nested_dropout!r}")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob}")
        self.nested_dropout, self.cond_drop_prob = nested_dropout, cond_drop_prob
        self.feature_model = feature_model
        if feature_model is not None:
            feature_model.requires_grad_(False).eval()
            dim = model.decoder.from_latents.out_features
            self.projector = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, feature_dim))
        else:
            self.projector = None
        self.repa_layer, self.repa_weight = repa_layer, repa_weight
        self.val_ks = val_ks or [1, 2, 4, 8, 16, 32, 64, 128, 256]

    # ------------------------------------------------------------------ loss
    def flow_loss(self, images: Tensor) -> dict[str, Tensor]:
        model = self.model
        x0 = model.vae.encode(images)
        _, codes, _ = model.encode_codes(x0)
        b = len(x0)
        keep = sample_keep_k(b, model.num_registers, self.nested_dropout, x0.device)
        drop = torch.rand(b, device=x0.device) < self.cond_drop_prob
        cond = model.decoder.condition(codes, keep, drop)
        sigma = torch.sigmoid(torch.randn(b, device=x0.device))
        noise = torch.randn_like(x0)
        s = sigma.view(-1, 1, 1, 1)
        x_t = s * noise + (1 - s) * x0
        out: dict[str, Tensor] = {}
        if self.projector is not None:
            v, feats = model.decoder(x_t, sigma, cond, return_layer=self.repa_layer)
            out["repa"] = self.repa_loss(images, feats)
        else:
            v = model.decoder(x_t, sigma, cond)
        out["flow"] = F.mse_loss(v.float(), (noise - x0).float())
        out["loss"] = out["flow"] + (self.repa_weight * out["repa"] if "repa" in out else 0.0)
        return out

    def repa_loss(self, images: Tensor, feats: Tensor) -> Tensor:
        with torch.no_grad():
            target = self.feature_model(images)  # [B, N, F]
        pred = self.projector(feats)  # [B, n, F]
        if target.shape[1] != pred.shape[1]:  # resample the target patch grid to the decoder's
            side = int(math.isqrt(target.shape[1]))
            grid = target.transpose(1, 2).reshape(len(target), -1, side, side)
            n_side = int(math.isqrt(pred.shape[1]))
            target = F.interpolate(grid, size=(n_side, n_side), mode="bilinear").flatten(2).transpose(1, 2)
        return -F.cosine_similarity(pred.float(), target.float(), dim=-1).mean()

    @staticmethod
    def _images(batch: Any) -> Tensor:
        return batch["image"] if isinstance(batch, dict) else batch

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        out = self.flow_loss(self._images(batch))
        self.log_dict({f"train/{k}": v for k, v in out.items()}, prog_bar=True, batch_size=len(self._images(batch)))
        return out

    @torch.no_grad()
    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        images = self._images(batch)
        out = {"flow": self.flow_loss(images)["flow"]}
        tokens = self.model.encode(images)
        gen = torch.Generator(device=images.device).manual_seed(0)
        for k in [k for k in self.val_ks if k <= self.model.num_registers]:
            recon = self.model.decode(tokens, k=k, generator=gen)
            out[f"psnr_k{k}"] = psnr(recon, images).mean()
        self.log_dict({f"val/{k}": v for k, v in out.items()}, batch_size=len(images))
        return out
