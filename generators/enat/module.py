"""Lightning side of ENAT: masked-token cross-entropy on token shards, with reuse training (spec nat_car.md §1.4).

Batches are ``ShardDataModule(modality="tokens")`` dicts: ``ids`` ``[B, h, w]`` (or ``[B, L]``) and an optional
``cls`` ``[B]`` (absent: every row uses the null class, i.e. unconditional training).

Per step, as the official train.py:
- labels are replaced by the null class with ``p_uncond`` (the official dataset does this; the model's own
  label dropout then applies again in train mode);
- one mask ratio ``r ~ Beta(12, 3)`` per batch, ``n = clamp(round(L r), 1, L-1)`` masked positions per row from
  a random permutation; loss = cross-entropy with label smoothing on the masked positions only;
- with probability ``reuse_prob`` the step trains the reuse path: a random fraction ``U(0,1)`` of the
  visible tokens is re-masked to make a "previous step" input, the EMA model (eval mode, no grad; the live
  model when ``ema_decay`` is off) produces its state, and the live model runs with ``prev=`` that state.
- AdamW with betas (0.99, 0.99) and weight decay on every parameter, linear warm-up then constant LR, EMA of
  the weights (what checkpoints export). The defaults, in YAML (the one way to train, `tokenforge.training`)::

      optimizer:
        class_path: torch.optim.AdamW
        init_args: {lr: 4.0e-4, betas: [0.99, 0.99], weight_decay: 0.03}
      lr_scheduler:
        class_path: tokenforge.lr_schedulers.WarmupConstantLR
        init_args: {warmup_steps: 5000}

  The module arguments ``lr``, ``betas``, ``weight_decay`` and ``warmup_steps`` are deprecated aliases laid over
  these callables; ``gradient_clip_val`` clips (the module's, else the Trainer's; none by default, as official).

Logged: ``train/loss``, ``train/mask_ratio``, ``train/lr``, ``val/loss`` (EMA weights, fixed ratio 0.8, no reuse).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from tokenforge.generators.enat.model import ENAT, ENATState, random_mask
from tokenforge.lr_schedulers import WarmupConstantLR
from tokenforge.training import TrainingModule, optimizer_with, scheduler_with

#: official ENAT: AdamW lr 4e-4, betas (0.99, 0.99), weight decay 0.03 on every parameter
DEFAULT_OPTIMIZER = functools.partial(torch.optim.AdamW, lr=4e-4, betas=(0.99, 0.99), weight_decay=0.03)
#: official ENAT: 5000 warm-up steps, then constant
DEFAULT_SCHEDULER = functools.partial(WarmupConstantLR, warmup_steps=5000)


class ENATModule(TrainingModule):
    """Trains an `ENAT` on token shards; see the module docstring."""

    partial_backward = True  # the reuse projection trains only on reuse steps: DDP must allow unused parameters

    def __init__(
        self,
        model: ENAT,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        gradient_clip_val: float | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        betas: tuple[float, float] | None = None,
        warmup_steps: int | None = None,
        ema_decay: float | None = 0.9999,
        mask_beta: tuple[float, float] = (12.0, 3.0),
        label_smoothing: float = 0.1,
        p_uncond: float = 0.15,
        reuse_prob: float = 0.5,
    ) -> None:
        name = type(self).__name__
        super().__init__(
            model, ema_decay,
            optimizer=optimizer_with(optimizer, DEFAULT_OPTIMIZER, name, lr=lr, betas=betas, weight_decay=weight_decay),
            lr_scheduler=scheduler_with(lr_scheduler, DEFAULT_SCHEDULER, name, warmup_steps=warmup_steps),
            gradient_clip_val=gradient_clip_val)
        self.save_hyperparameters(ignore=["model", "optimizer", "lr_scheduler"])
        self._beta = torch.distributions.Beta(float(mask_beta[0]), float(mask_beta[1]))

    # ------------------------------------------------------------------ batches

    def _inputs(self, batch: dict[str, Any], train: bool) -> tuple[Tensor, Tensor]:
        ids = batch["ids"].reshape(batch["ids"].shape[0], -1).long()
        model = self.model
        if ids.shape[1] != model.seq_len:
            raise ValueError(f"token batches hold {ids.shape[1]} ids per sample; the model expects seq_len "
                             f"{model.seq_len}")
        if bool((ids < 0).any()) or bool((ids >= model.codebook_size).any()):
            raise ValueError(f"token ids must lie in [0, {model.codebook_size}); check codebook_size vs the tokenizer")
        labels = model.batch_labels(batch)
        if train and self.hparams.p_uncond > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.hparams.p_uncond
            labels = torch.where(drop, torch.full_like(labels, model.null_class), labels)
        return ids, labels

    def masked_loss(self, logits: Tensor, ids: Tensor, masking: Tensor, smoothing: float) -> Tensor:
        """Cross-entropy on the masked positions only (mean over masked tokens)."""
        return F.cross_entropy(logits[masking].float(), ids[masking], label_smoothing=smoothing)

    def step_loss(self, batch: dict[str, Any], reuse: bool | None = None) -> tuple[Tensor, float]:
        """One training loss; ``reuse`` forces / forbids the reuse path (default: with ``reuse_prob``)."""
        ids, labels = self._inputs(batch, train=True)
        b, length = ids.shape
        ratio = float(self._beta.sample())
        count = min(max(round(length * ratio), 1), length - 1)
        masking = random_mask(b, length, count, device=ids.device)
        inp = ids.masked_fill(masking, self.model.mask_token_id)
        if reuse is None:
            reuse = bool(torch.rand(()) < self.hparams.reuse_prob)
        prev: ENATState | None = None
        if reuse:
            visible = length - count
            extra = round(float(torch.rand(())) * visible)
            # re-mask `extra` random visible positions per row: rank the visible ones randomly
            scores = torch.rand(b, length, device=ids.device).masked_fill(masking, 2.0)
            remask = scores.argsort(dim=1).argsort(dim=1) < extra
            teacher = self.eval_model
            with torch.no_grad():
                prev = teacher(inp.masked_fill(remask, self.model.mask_token_id), labels)
                prev = ENATState(prev.logits, prev.feat.detach(), prev.masking)
        out = self.model(inp, labels, prev=prev)
        return self.masked_loss(out.logits, ids, masking, self.hparams.label_smoothing), count / length

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, ratio = self.step_loss(batch)
        size = batch["ids"].shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        self.log("train/mask_ratio", ratio, batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=size)
        return loss

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        ids, _ = self._inputs(batch, train=False)  # checks the ids against the model
        total, count = self.eval_model.nll(batch, seed=batch_idx, mask_ratio=0.8)
        loss = total / count
        self.log("val/loss", loss, prog_bar=True, batch_size=ids.shape[0], sync_dist=True)
        return loss
