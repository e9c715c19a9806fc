"""Token sampling for autoregressive generators: temperature, top-k, top-p, classifier-free guidance.

- `filter_logits`: HF-style top-k (keep logits >= the k-th largest) then top-p (sort descending, drop tokens
  once the cumulative probability exceeds ``top_p``, always keeping the token that crosses it). This is
  LlamaGen's ``top_k_top_p_filtering``; VAR's ascending-sort formulation keeps the same set of tokens
  (up to exact ties).
- `logits_to_probs`: divide by ``max(temperature, 1e-5)``, filter, softmax (LlamaGen ``logits_to_probs``).
- `sample`: multinomial from those probabilities with an optional ``torch.Generator``, or argmax (greedy).
- `gumbel_noise` + `sample_with_noise`: the same distribution by the Gumbel-max trick,
  ``argmax(filtered_logits / T - log E)`` with ``E ~ Exp(1)`` drawn outside (one kernel, seeded generator)
  and passed in. No host syncs and no data-dependent Python branches, so a whole sampling step can run
  under ``torch.compile(fullgraph=True)`` / a CUDA graph; ``-log E`` is a standard Gumbel variable, hence
  ``P(argmax = i) = softmax(filtered)_i`` exactly, and filtered (``-inf``) tokens are never drawn.
- `cfg_weight`: the guidance weight ``w`` at a step; guided logits are ``uncond + w * (cond - uncond)``.
  ``constant``: w = cfg (LlamaGen). ``linear``: w rises from 1 to cfg over the steps. ``var``: VAR's ramp
  ``w = 1 + cfg * s / (K - 1)`` (its ``(1 + t) * cond - t * uncond`` with ``t = cfg * s / (K - 1)``).

Conventions: ``top_k <= 0`` and ``top_p`` outside ``(0, 1)`` switch a filter off (``top_p = 0`` is "off" as in
VAR, not "greedy").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CFG_SCHEDULES = ("constant", "linear", "var")


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Return a copy of ``logits`` (``[..., V]``) with tokens outside top-k / top-p set to ``-inf``."""
    logits = logits.clone()
    vocab = logits.shape[-1]
    if top_k and top_k > 0:
        k = min(int(top_k), vocab)
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # shift right by one (the first token is never removed): keep the token that crosses top_p
        remove = torch.cat([torch.zeros_like(cumulative[..., :1], dtype=torch.bool), cumulative[..., :-1] > top_p], -1)
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def logits_to_probs(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Probabilities after temperature and top-k / top-p filtering, as LlamaGen samples them."""
    logits = logits / max(float(temperature), 1e-5)
    if (top_k and top_k > 0) or (top_p is not None and 0.0 < top_p < 1.0):
        logits = filter_logits(logits, top_k, top_p)
    return F.softmax(logits.float(), dim=-1)


def sample(
    logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row of ``logits`` ``[..., V]`` -> ``[...]`` (long)."""
    if greedy:
        return logits.argmax(dim=-1)
    probs = logits_to_probs(logits, temperature, top_k, top_p)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def gumbel_noise(
    shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """``Exp(1)`` draws (float32) for `sample_with_noise`; ``out`` reuses a buffer (one kernel, no allocation)."""
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=device)
    return out.exponential_(generator=generator)


def sample_with_noise(
    logits: Tensor, noise: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
    greedy: bool = False,
) -> Tensor:
    """One token per row of ``logits`` ``[..., V]`` from ``noise`` = `gumbel_noise` of the same shape -> ``[...]``.

    Distributed as `sample` (multinomial over the filtered softmax), but the randomness is an input: the
    function is capturable. ``greedy`` ignores the noise and returns the argmax, exactly as `sample`.
    """
    if greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / max(float(temperature), 1e-5)
    if (top_k and top_k > 0) or (top_p is not None and 0.0 < top_p < 1.0):
        logits = filter_logits(logits, top_k, top_p)
    # -log(E) ~ Gumbel(0, 1); the clamp keeps it finite (E == 0 has probability ~1e-38) so -inf stays -inf
    return (logits - noise.clamp_min(torch.finfo(torch.float32).tiny).log()).argmax(dim=-1)


def cfg_weight(schedule: str, cfg: float, step: int, total: int) -> float:
    """Guidance weight at ``step`` of ``total`` (see the module docstring for the schedules)."""
    if schedule not in CFG_SCHEDULES:
        raise ValueError(f"unknown CFG schedule {schedule!r}; choose one of {', '.join(CFG_SCHEDULES)}")
    ratio = step / (total - 1) if total > 1 else 1.0
    if schedule == "constant":
        return float(cfg)
    if schedule == "linear":
        return 1.0 + (float(cfg) - 1.0) * ratio
    return 1.0 + float(cfg) * ratio


def guide(cond: Tensor, uncond: Tensor, weight: float | Tensor) -> Tensor:
    """Classifier-free guidance: ``uncond + weight * (cond - uncond)``; weight 1 returns ``cond`` exactly.

    A 0-d tensor ``weight`` (a schedule's value, without recompiling) selects ``cond`` with `torch.where`
    instead of a Python branch, so it needs no host sync.
    """
    if torch.is_tensor(weight):
        return torch.where(weight == 1.0, cond, uncond + (cond - uncond) * weight.to(cond.dtype))
    if weight == 1.0:
        return cond
    return uncond + (cond - uncond) * weight
