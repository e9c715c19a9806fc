"""Lightning side of the autoregressive generators: next-token / next-scale cross-entropy on token shards.

`ARModule` wraps a `GPT` or a `VAR` (``self.model``) and reads ``ShardDataModule(modality="tokens")`` batches:
``ids`` (grid ``[B,h,w]``, sequence ``[B,L]`` padded with -1 plus ``lengths``, or multi-scale ids flattened
and concatenated ``[B, sum l_s]``) and an optional ``cls`` ``[B]``. A VAR needs the multi-scale quantizer that
produced the ids (teacher-forcing inputs): ``tokenizer`` names a tokenizer checkpoint (anything
`tokenforge.hub.from_pretrained` opens, or ``official:<method>:<path>`` for `from_official`); it is frozen.
Text-conditioned GPTs read precomputed caption features from ``batch["caption"]`` ``[B, T, caption_dim]``.

Optimisation as LlamaGen / VAR: AdamW (default lr 1e-4, betas (0.9, 0.95), weight decay 0.05 on matrices
only), linear warm-up then cosine decay to ``min_lr_ratio`` (or constant), stepped per optimiser step.
Gradient accumulation, clipping and bf16 come from the Trainer (``accumulate_grad_batches``,
``gradient_clip_val``, ``precision: bf16-mixed``). ``ema_decay`` keeps an exponential moving average of the
weights (``self.ema``), which then is what checkpoints export (``from_pretrained(ckpt)`` returns EMA weights).
``compile`` runs the training forward through ``torch.compile``; for a GPT the compiled function is
`GPT.loss` (forward and cross-entropy in one graph without breaks, so the float32 upcast of the logits
fuses into the loss rather than materialising a ``[B, L, V]`` float32 tensor).

Logged: ``train/loss`` (nats/token), ``train/lr``, ``val/nll`` (nats/token, eval mode, EMA weights when on).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from tokenforge.errors import UsageError
from tokenforge.generators.autoregressive.gpt import GPT, IGNORE
from tokenforge.generators.autoregressive.var import VAR
from tokenforge.hub import load_tokenizer
from tokenforge.training import TrainingModule, warmup_cosine


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

    def __init__(
        self,
        model: GPT | VAR,
        tokenizer: str | None = None,
        optimizer: OptimizerCallable | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 0,
        schedule: str = "cosine",
        min_lr_ratio: float = 0.0,
        ema_decay: float | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(model, ema_decay)
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
        self.save_hyperparameters(ignore=["model", "optimizer"])
        self.optimizer_fn = optimizer
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

    def configure_optimizers(self) -> Any:
        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": self.hparams.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if self.optimizer_fn is not None:
            optimizer = self.optimizer_fn(groups)
        else:
            # fused AdamW unscales gradients itself, which Lightning's mixed precision forbids with clipping
            clipping = self.trainer is not None and bool(self.trainer.gradient_clip_val)
            fused = self.device.type == "cuda" and not clipping
            optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=tuple(self.hparams.betas), fused=fused)
        total = self.trainer.max_steps if self.trainer is not None and self.trainer.max_steps > 0 else None
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_factor(self, total: int | None) -> Any:
        """Step -> LR multiplier: linear warm-up, then cosine to ``min_lr_ratio`` over ``total`` steps (or constant)."""
        cosine = self.hparams.schedule == "cosine"
        return warmup_cosine(total if cosine else None, int(self.hparams.warmup_steps),
                             float(self.hparams.min_lr_ratio))
