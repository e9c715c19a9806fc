"""Codebook health during training: usage, dead codes, entropy and perplexity of every quantizer, and an alarm.

`CodebookHealth` is a Lightning callback for any module: it finds every `Quantizer` inside it (VQ, FSQ,
multi-scale residual, or a method's own subclass) and counts the codes each one emits in training mode (a
forward hook on the `QuantizerOutput`, or `Quantizer.add_index_listener` for one that ``reports_indices``
itself because its method calls its parts, as FlexTok does FSQ's). Every ``every_n_steps`` training batches it sums the counts over all ranks (so a DDP run reports
the global histogram, and every rank reaches the reduction together), logs per quantizer

    codebook/<module path>/usage        fraction of the codebook used in the window
    codebook/<module path>/dead_codes   codes not used once in the window
    codebook/<module path>/entropy      entropy of the code frequencies in bits (at most log2 codebook size)
    codebook/<module path>/perplexity   2**entropy: how many equally used codes that entropy is worth

to every logger at the step Lightning logs the module's own metrics at, and keeps them in ``history``. Counting
a window of batches rather than one batch is the point: a batch of N vectors can use at most N codes, a window
shows which codes the data really reaches (VQ papers' "codebook utilisation").

The collapse alarm warns once per quantizer (a `CodebookCollapseWarning`, on rank 0) with the step and the
numbers, when after ``warmup_steps`` batches a window's perplexity falls below ``min_perplexity`` or its used
codes fall below ``min_usage`` of the codes the window could have used (``min(codebook size, vectors)``).
``every_n_steps`` counts training batches: equal to optimiser steps, except for GAN modules with two optimisers,
whose ``global_step`` advances by two per batch.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from tokenforge.tokenizers.quantizers.base import Quantizer, histogram_statistics
from tokenforge.tokenizers.quantizers.distributed import exact_sum_dtype


class CodebookCollapseWarning(UserWarning):
    """A quantizer's code histogram fell below `CodebookHealth`'s thresholds."""


def find_quantizers(module: nn.Module) -> dict[str, Quantizer]:
    """Every `Quantizer` in ``module`` by its module path, outermost only (a quantizer built from quantizers
    reports once, under its own name)."""
    found: dict[str, Quantizer] = {}
    for name, sub in module.named_modules():
        if isinstance(sub, Quantizer) and not any(name.startswith(outer + ".") for outer in found):
            found[name or "quantizer"] = sub
    return found


def _flat_indices(indices: Tensor | list[Tensor]) -> Tensor:
    if isinstance(indices, Tensor):
        return indices.reshape(-1)
    return torch.cat([i.reshape(-1) for i in indices])


class CodebookHealth(pl.Callback):
    """Log codebook usage, dead codes, entropy and perplexity every ``every_n_steps`` batches; warn on collapse.

    Args:
        every_n_steps: training batches per window (the histogram is reset after each report).
        min_usage: alarm when the window used fewer than this fraction of the codes it could have used
            (``min(codebook size, vectors quantised in the window)``); 0 disables this test.
        min_perplexity: alarm when the window's perplexity is below this (1 = every vector on one code);
            0 disables this test.
        warmup_steps: no alarm for windows ending before this many training batches (logging still runs).
        prefix: metric name prefix.
    """

    def __init__(self, every_n_steps: int = 50, min_usage: float = 0.01, min_perplexity: float = 2.0,
                 warmup_steps: int = 0, prefix: str = "codebook") -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if not 0.0 <= min_usage <= 1.0 or min_perplexity < 0:
            raise ValueError(f"min_usage must be in [0, 1] and min_perplexity >= 0, got {min_usage}, {min_perplexity}")
        self.every_n_steps, self.min_usage, self.min_perplexity = every_n_steps, min_usage, min_perplexity
        self.warmup_steps, self.prefix = warmup_steps, prefix
        self.quantizers: dict[str, Quantizer] = {}
        self.counts: dict[str, Tensor] = {}
        self.history: list[dict[str, Any]] = []  # one row per quantizer and window: name, step, batches, metrics
        self.alarmed: set[str] = set()
        self.batches = 0
        self._hooks: list[Any] = []

    # ------------------------------------------------------------------ hooks into the module

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self._hooks:
            return
        self.quantizers = find_quantizers(pl_module)
        for name, quantizer in self.quantizers.items():
            count = self._counter(name)
            if quantizer.reports_indices:  # called in parts by its method (FSQ): it reports its indices itself
                self._hooks.append(quantizer.add_index_listener(count))
            else:
                self._hooks.append(quantizer.register_forward_hook(
                    lambda module, args, output, count=count: count(module, getattr(output, "indices", None))))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _counter(self, name: str):
        def count(quantizer: Quantizer, indices: Tensor | list[Tensor] | None) -> None:
            if not quantizer.training or indices is None:
                return
            flat = _flat_indices(indices).detach().long()
            counts = self.counts.get(name)
            if counts is None:
                counts = self.counts[name] = torch.zeros(quantizer.codebook_size, device=flat.device,
                                                         dtype=exact_sum_dtype(flat.device))
            flat = flat.to(counts.device)
            counts.index_add_(0, flat, torch.ones_like(flat, dtype=counts.dtype))

        return count

    # ------------------------------------------------------------------ reporting

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.batches += 1
        if self.batches % self.every_n_steps == 0:
            self.report(trainer, pl_module)

    def report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[dict[str, Any]]:
        """Reduce, log and reset the window's histograms; returns this window's rows of `history`."""
        rows = []
        for name, quantizer in self.quantizers.items():  # same order on every rank: each reduction is matched
            counts = self.counts.pop(name, None)
            if counts is None:
                counts = torch.zeros(quantizer.codebook_size, device=pl_module.device,
                                     dtype=exact_sum_dtype(pl_module.device))
            counts = trainer.strategy.reduce(counts.to(pl_module.device), reduce_op="sum")
            metrics = {key: float(value) for key, value in histogram_statistics(counts).items()}
            if metrics["vectors"] == 0:  # not run in training mode (e.g. an EMA copy of the weights): nothing to say
                continue
            rows.append({"name": name, "step": trainer.global_step, "batches": self.batches, **metrics})
            logged = {f"{self.prefix}/{name}/{key}": metrics[key]
                      for key in ("usage", "dead_codes", "entropy", "perplexity")}
            for logger in trainer.loggers:  # at the step Lightning logs its own metrics at (batches, for GANs too)
                logger.log_metrics(logged, step=getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped",
                                                        trainer.global_step))
            if name not in self.alarmed and self.batches >= self.warmup_steps:
                self._alarm(trainer, name, metrics, quantizer.codebook_size)
        self.history.extend(rows)
        return rows

    def _alarm(self, trainer: pl.Trainer, name: str, metrics: dict[str, float], codebook_size: int) -> None:
        reachable = min(codebook_size, int(metrics["vectors"]))
        used = codebook_size - int(metrics["dead_codes"])
        low_usage = used < self.min_usage * reachable
        low_perplexity = metrics["perplexity"] < self.min_perplexity
        if not (low_usage or low_perplexity):
            return
        self.alarmed.add(name)
        if trainer.is_global_zero:
            why = " and ".join(
                ([f"used codes < min_usage {self.min_usage:g} x {reachable} reachable"] if low_usage else [])
                + ([f"perplexity < min_perplexity {self.min_perplexity:g}"] if low_perplexity else []))
            warnings.warn(
                f"codebook collapse in '{name}' at step {trainer.global_step} (batches "
                f"{self.batches - self.every_n_steps + 1}-{self.batches}): {used} of {codebook_size} codes used "
                f"over {int(metrics['vectors'])} vectors, perplexity {metrics['perplexity']:.2f}, entropy "
                f"{metrics['entropy'] + 0.0:.2f} bits, {int(metrics['dead_codes'])} dead codes ({why}); check the "
                "learning rate, the commitment weight and dead-code restarts",
                CodebookCollapseWarning, stacklevel=2)

    # ------------------------------------------------------------------ resumption

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "alarmed": sorted(self.alarmed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.batches = int(state_dict.get("batches", 0))
        self.alarmed = set(state_dict.get("alarmed", ()))
