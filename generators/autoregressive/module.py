"""Lightning side of the autoregressive generators: next-token / next-scale cross-entropy on token shards.

`ARModule` wraps a `GPT` or a `VAR` (``self.model``) and reads ``ShardDataModule(modality="tokens")`` batches:
``ids`` (grid ``[B,h,w]``, sequence ``[B,L]`` padded with -1 plus ``lengths``, or multi-scale ids flattened
and concatenated ``[B, sum l_s]``) and an optional ``cls`` ``[B]``. A VAR needs the multi-scale quantizer that
produced the ids (teacher-forcing inputs): ``tokenizer`` names a tokenizer checkpoint (anything
`tokenforge.hub.from_pretrained` opens, or ``official:<method>:<path>`` for `from_official`); it is frozen.
Text-conditioned GPTs read precomputed caption features from ``batch["caption"]`` ``[B, T, caption_dim]``.

Optimisation as LlamaGen / VAR (the one way to train, `tokenforge.training`): AdamW with weight decay on
matrices only (`parameter_groups`: the no-decay group of vectors has ``weight_decay: 0``), linear warm-up then
cosine decay to ``min_lr_ratio`` over ``trainer.max_steps``, stepped per optimiser step; fused AdamW on CUDA
when nothing is clipped. The defaults, in YAML::

    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 1.0e-4, betas: [0.9, 0.95], weight_decay: 0.05}
    lr_scheduler:
      class_path: tokenforge.lr_schedulers.WarmupCosineLR
      init_args: {warmup_steps: 0, min_lr_ratio: 0.0}

(a constant LR after the warm-up: ``tokenforge.lr_schedulers.WarmupConstantLR``). The module arguments ``lr``,
``betas``, ``weight_decay``, ``warmup_steps``, ``schedule`` and ``min_lr_ratio`` are deprecated aliases laid
over these callables (``schedule`` picks the default scheduler's class; a given ``lr_scheduler`` wins).
Gradient clipping: ``gradient_clip_val`` (the module's, else the Trainer's); gradient accumulation and bf16
come from the Trainer (``accumulate_grad_batches``, ``precision: bf16-mixed``). ``ema_decay`` keeps an
exponential moving average of the weights (``self.ema``), which then is what checkpoints export
(``from_pretrained(ckpt)`` returns EMA weights).
``compile`` runs the training forward through ``torch.compile``; for a GPT the compiled function is
`GPT.loss` (forward and cross-entropy in one graph without breaks, so the float32 upcast of the logits
fuses into the loss rather than materialising a ``[B, L, V]`` float32 tensor).

Logged: ``train/loss`` (nats/token), ``train/lr``, ``val/nll`` (nats/token, eval mode, EMA weights when on).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from tokenforge.errors import UsageError
from tokenforge.generators.autoregressive.gpt import GPT, IGNORE
from tokenforge.generators.autoregressive.var import VAR
from tokenforge.hub import load_tokenizer
from tokenforge.lr_schedulers import WarmupConstantLR, WarmupCosineLR
from tokenforge.training import TrainingModule, decay_groups, optimizer_with, scheduler_with

#: LlamaGen / VAR: AdamW lr 1e-4, betas (0.9, 0.95), weight decay 0.05 (matrices only, `parameter_groups`)
DEFAULT_OPTIMIZER = functools.partial(torch.optim.AdamW, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=None)


def check_token_ids(batch: Any, model: nn.Module) -> None:
    """Raise `UsageError` (one line: both numbers and the config key) when a batch holds ids the model's
    embedding has no row for, instead of an index error deep in ``nn.Embedding``."""
    ids = batch.get("ids") if isinstance(batch, dict) else None
    vocab = getattr(model, "vocab_size", None)
    if not isinstance(ids, Tensor) or ids.numel() == 0 or vocab is None:
        return
    top = int(ids.max())
    if top >= vocab:
        raise UsageError(f"the token shards hold ids up to {top}, but the {type(model).__name__} has vocab_size "
                         f"{vocab}: set model.init_args.model.init_args.vocab_size to at least {top + 1} (the "
                         "tokenizer's codebook size)")


class ARModule(TrainingModule):
    """Trains a `GPT` (next token) or `VAR` (next scale) on token shards; see the module docstring."""

    fused_on_cuda = True  # as before the one way to train: fused AdamW on CUDA unless clipping

    def __init__(
        self,
        model: GPT | VAR,
        tokenizer: str | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        gradient_clip_val: float | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        betas: tuple[float, float] | None = None,
        warmup_steps: int | None = None,
        schedule: str | None = None,
        min_lr_ratio: float | None = None,
        ema_decay: float | None = None,
        compile: bool = False,
    ) -> None:
        if schedule not in (None, "cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
        constant = schedule == "constant" and lr_scheduler is None  # a given lr_scheduler wins over `schedule`
        default_scheduler = functools.partial(WarmupConstantLR if constant else WarmupCosineLR)
        name = type(self).__name__
        super().__init__(
            model, ema_decay,
            optimizer=optimizer_with(optimizer, DEFAULT_OPTIMIZER, name, lr=lr, betas=betas, weight_decay=weight_decay),
            lr_scheduler=scheduler_with(lr_scheduler, default_scheduler, name, warmup_steps=warmup_steps,
                                        min_lr_ratio=None if constant else min_lr_ratio),
            gradient_clip_val=gradient_clip_val)
        self.save_hyperparameters(ignore=["model", "optimizer", "lr_scheduler"])
        self.quantizer: nn.Module | None = None
        if isinstance(model, VAR):
            if tokenizer is None:
                raise ValueError("a VAR generator trains on multi-scale ids: pass tokenizer=<its tokenizer checkpoint>")
            quantizer = load_tokenizer(tokenizer).quantizer.eval().requires_grad_(False)
            for m in (model, self.ema):
                if m is not None:
                    m.attach_quantizer(quantizer)
            self.quantizer = quantizer  # moves with the module; not exported (prefix "model.")
        # a tuple keeps the compiled wrapper out of the module tree (no duplicate state-dict entries)
        self._compiled = (torch.compile(model.loss if isinstance(model, GPT) else model),) if compile else ()

    # ------------------------------------------------------------------ losses

    def nll(self, model: nn.Module, batch: dict[str, Any], forward: Any = None) -> Tensor:
        """Mean cross-entropy (nats per token) of ``model`` on a token batch (its `teacher_forcing`)."""
        logits, targets = model.teacher_forcing(batch, forward)
        return F.cross_entropy(logits.flatten(0, 1), targets, ignore_index=IGNORE)

    def train_loss(self, batch: dict[str, Any]) -> Tensor:
        """The training loss of a batch, through the compiled function when ``compile`` is on."""
        if self._compiled and isinstance(self.model, GPT):
            return self._compiled[0](batch["ids"], self.model.batch_condition(batch), batch.get("lengths"))
        return self.nll(self.model, batch, self._compiled[0] if self._compiled else None)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        check_token_ids(batch, self.model)  # before the embedding: on a GPU a bad id is a device-side assert
        loss = self.train_loss(batch)
        size = batch["ids"].shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        model = self.eval_model
        check_token_ids(batch, model)
        loss = self.nll(model, batch)
        self.log("val/nll", loss, prog_bar=True, batch_size=batch["ids"].shape[0], sync_dist=True)
        return loss

    # ------------------------------------------------------------------ optimisation

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Weight decay on matrices only (LlamaGen / VAR): vectors (norms, biases) in a group without decay."""
        return decay_groups(self.model.parameters())

    def lr_factor(self, total: int | None) -> Any:
        """Step -> LR multiplier of this module's schedule over a run of ``total`` optimiser steps."""
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        scheduler = self.lr_scheduler_fn(probe)
        if hasattr(scheduler, "set_run_length"):
            scheduler.set_run_length(total)
        return scheduler.lr_lambdas[0]
