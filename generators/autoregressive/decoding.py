"""One whole GPT sampling step as a single capturable function (for ``torch.compile`` / CUDA graphs).

Per token, `make_decode_step` runs: token ids -> embedding -> cached transformer step -> float32 logits ->
CFG mix (weight as a 0-d tensor: a schedule does not recompile) -> temperature -> top-k / top-p ->
Gumbel-max sampling with noise passed in (`sampling.sample_with_noise`) -> next ids ``[n]`` and the
CFG-doubled feed ``[rows]`` for the following step. Nothing in it syncs with the host or branches on data,
so ``torch.compile(step, fullgraph=True, mode="reduce-overhead")`` captures the whole step in one CUDA graph;
outside it only the noise draw (one kernel, seeded ``torch.Generator``) and the copy of the ids remain.

Settings that change the graph's structure (batch, guidance on/off, temperature, top-k/top-p, greedy) are
Python constants of the step (a change recompiles); the guidance weight and positions are tensors.
`guidance_weights` precomputes the weight of every step (schedule and ``cfg_interval``) on the device, and
`choose` is the same sampling for logits computed elsewhere (the prefill, full recomputation), so the cached,
compiled and recomputed paths draw identical tokens from identical noise. `generate_multinomial` is the former
loop (``torch.multinomial`` per step, only the transformer compiled), kept for comparison and old seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tokenforge.generators.sampling import cfg_weight, guide, sample, sample_with_noise


@dataclass(frozen=True)
class StepSettings:
    """Graph-shaping constants of a sampling step; ``n`` samples, ``guided``: rows ``[cond; uncond]`` = ``2n``."""

    n: int
    guided: bool
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False

    @property
    def rows(self) -> int:
        return 2 * self.n if self.guided else self.n


def guidance_weights(
    cfg: float, schedule: str, interval: int, total: int, device: torch.device | str | None = None,
) -> Tensor:
    """Weight of every step ``[total]`` (float32): `sampling.cfg_weight`, and 1 after ``cfg_interval`` (> -1) steps."""
    weights = [1.0 if -1 < interval < i else cfg_weight(schedule, cfg, i, total) for i in range(total)]
    return torch.tensor(weights, dtype=torch.float32, device=device)


def choose(logits: Tensor, weight: Tensor, noise: Tensor, settings: StepSettings) -> Tensor:
    """Logits of all rows ``[rows, V]`` -> token ids ``[n]``: CFG mix, then `sample_with_noise`."""
    if settings.guided:
        logits = guide(logits[: settings.n], logits[settings.n :], weight)
    return sample_with_noise(logits, noise, settings.temperature, settings.top_k, settings.top_p, settings.greedy)


def make_decode_step(model: torch.nn.Module, settings: StepSettings) -> Callable[..., tuple[Tensor, Tensor]]:
    """``step(feed [rows], input_pos (1,), weight (), noise [n, V]) -> (ids [n], next feed [rows])``.

    ``model`` is a `GPT` with a KV cache set up for ``settings.rows`` rows; ``feed`` holds the previous ids
    (repeated for the unconditional half) and ``input_pos`` their position. A next id beyond the token table
    (an EOS) is fed as id 0; the caller masks finished rows anyway.
    """
    repeats, last = settings.rows // settings.n, model.tok_embeddings.num_embeddings - 1

    def step(feed: Tensor, input_pos: Tensor, weight: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        logits = model.decode_one(feed, input_pos)
        token = choose(logits, weight, noise, settings)
        next_feed = torch.where(token > last, torch.zeros_like(token), token).repeat(repeats)
        return token, next_feed

    return step


def output_state(model: torch.nn.Module, n: int, total: int, device: torch.device, progress: bool) -> tuple:
    """Buffers of a sampling loop: ids (-1 = not yet), finished / lengths (EOS), decode positions, the step range.

    Positions are made once on the device: a ``torch.tensor(..., device=cuda)`` per step is a blocking host copy.
    """
    out = torch.full((n, total), -1, dtype=torch.long, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    lengths = torch.full((n,), total, dtype=torch.long, device=device)
    positions = torch.arange(model.cls_token_num, model.cls_token_num + total, device=device)
    steps: Any = range(total)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="tokens", leave=False)
    return out, finished, lengths, positions, steps


def generate_multinomial(
    model: torch.nn.Module, n: int, cond: Tensor, guided: bool, cfg: float, cfg_schedule: str, cfg_interval: int,
    temperature: float, top_k: int, top_p: float, greedy: bool, generator: torch.Generator | None, total: int,
    use_cache: bool, compile: bool, progress: bool,
) -> Any:
    """`GPT.generate(multinomial=True)`: the per-step loop with ``torch.multinomial`` (LlamaGen's sampler).

    ``cond``: the embedded condition rows (``[cond; uncond]`` when ``guided``). Only the transformer step is
    compiled with ``compile``; kept as the reference the fused step replaced (and for multinomial seeds).
    """
    rows, device = cond.shape[0], cond.device
    decode = model.decode_one
    if use_cache:
        model.setup_kv_cache(rows)
        if compile:
            decode = torch.compile(model.decode_one, mode="reduce-overhead", fullgraph=True)
    out, finished, lengths, positions, steps = output_state(model, n, total, device, progress)
    try:
        logits = model.step(cond, torch.arange(model.cls_token_num, device=device))[:, -1] if use_cache else None
        for i in steps:
            if not use_cache:
                prefix = model.tok_embeddings(out[:, :i].clamp_min(0).repeat(rows // n, 1))
                x = torch.cat([cond, prefix], dim=1)
                h = model.transformer(x, causal=True, rope=model.rope[: x.shape[1]])
                logits = model.output(h[:, -1]).float()
            if guided:
                weight = 1.0 if -1 < cfg_interval < i else cfg_weight(cfg_schedule, cfg, i, total)
                step_logits = guide(logits[:n], logits[n:], weight)
            else:
                step_logits = logits
            token = sample(step_logits, temperature, top_k, top_p, greedy, generator)
            if model.eos:
                ended = (token == model.eos_id) & ~finished
                lengths = torch.where(ended, torch.full_like(lengths, i), lengths)
                finished = finished | ended
                token = token.masked_fill(finished, -1)
            out[:, i] = token
            if i == total - 1 or (model.eos and bool(finished.all())):
                break
            if use_cache:
                logits = decode(token.clamp_min(0).repeat(rows // n), positions[i : i + 1])
    finally:
        if use_cache:
            model.clear_kv_cache()
    return model.to_tokens(out, lengths if model.eos else None)
