"""ENAT sampling (official ``NATSchedule.generate``, spec nat_car.md §1.6) with computation reuse across steps.

Step ``s = 0..T-1`` with ``r = (s+1)/T``:
1. conditional and unconditional (null class) passes; from step 1 on each reuses its **own** previous state
   (``reuse=True``); both run as one batch of ``2B`` rows (rows are independent, so the two caches stay separate).
2. ``logp = log_softmax(cond + w * (cond - uncond))`` with ``w`` the linear ramp ``cfg_scale * s / T``
   (0 at step 0). The official arithmetic form is kept (not ``uncond + (1+w)(cond-uncond)``) so the
   float32 values, and hence the confidence order, match the official sampler.
3. draw at masked positions from ``softmax(logp / max(samp_temp*(1-r), 1e-3))``; visible positions keep ids.
4. confidence = ``logp[draw]`` (+inf where visible) + ``float32(mask_temp*(1-r) * gumbel)``, gumbel in float64.
5. the ``floor(L*cos(pi/2*r))`` least confident positions are re-masked.

``mode="maskgit"`` runs every block over all L tokens (no visible/mask split, no reuse): the compute
baseline of a plain MaskGIT-style transformer with the same weights (its samples differ, it was not trained
that way). Deterministic replay: pass ``noise={"draws": [T,B,L] long, "gumbel": [T,B,L] float64}``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenforge.generators.sampling import sample as sample_tokens
from tokenforge.tokenizers.base import Tokens

MODES = ("enat", "maskgit")


def mask_count(seq_len: int, step: int, steps: int) -> int:
    """Tokens still masked after ``step`` (0-based) of ``steps``: ``floor(L * cos(pi/2 * (step+1)/steps))``."""
    return int(math.floor(seq_len * math.cos(math.pi / 2 * (step + 1) / steps)))


def sampling_temperature(samp_temp: float, step: int, steps: int) -> float:
    return max(samp_temp * (1 - (step + 1) / steps), 1e-3)


def gumbel(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard Gumbel noise in float64 (``-log(-log U)``)."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=device).clamp_(1e-300, 1.0 - 1e-16)
    return -torch.log(-torch.log(u))


def from_cli_options(options: dict[str, Any]) -> dict[str, Any]:
    """Map the sampling keywords of the Generator contract onto `enat_generate`'s (``cfg`` is the guidance scale
    ``w``, ``temperature`` scales ``samp_temp``); refuse options ENAT cannot honour."""
    options = dict(options)
    if "cfg" in options:
        options["cfg_scale"] = float(options.pop("cfg"))
    if "temperature" in options:
        options["samp_temp"] = float(options.get("samp_temp", 6.0)) * float(options.pop("temperature"))
    if options.pop("greedy", False):
        raise ValueError("ENAT has no greedy mode (its re-masking needs sampled tokens); drop --greedy")
    top_p = options.pop("top_p", None)
    if options.pop("top_k", 0) or (top_p is not None and 0.0 < float(top_p) < 1.0):
        raise ValueError("ENAT samples without top-k / top-p filtering; drop --top-k / --top-p")
    schedule = options.pop("cfg_schedule", None)
    if schedule not in (None, "constant", "linear"):
        raise ValueError(f"ENAT uses its own linear CFG ramp; cfg_schedule {schedule!r} is not supported")
    for key in ("progress", "compile"):
        options.pop(key, None)
    return options


@torch.no_grad()
def enat_generate(
    model: Any,
    n: int,
    condition: Tensor | None = None,
    steps: int = 8,
    cfg_scale: float = 2.5,
    mask_temp: float = 1.5,
    samp_temp: float = 6.0,
    reuse: bool = True,
    mode: str = "enat",
    generator: torch.Generator | None = None,
    noise: dict[str, Tensor] | None = None,
    return_trace: bool = False,
) -> Tokens:
    """Sample ``n`` token grids from an `ENAT` model; ``condition`` is ``[n]`` class ids (default: random).

    Returns `Tokens` with ids ``[n, h, w]`` (square grid); with ``return_trace`` the meta holds
    ``ids_in`` (``[T,n,L]``, the ids fed at each step) and ``logp`` (list of ``[n,L,V]`` guided log-probs).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = next(model.parameters()).device
    L, mask_id = model.seq_len, model.mask_token_id
    if condition is None:
        condition = torch.randint(0, model.num_classes, (n,), generator=generator, device=device)
    labels = condition.reshape(-1).to(device=device, dtype=torch.long)
    if labels.shape[0] != n:
        raise ValueError(f"got {labels.shape[0]} class labels for n={n}")
    guided = cfg_scale != 0.0
    both = torch.cat([labels, torch.full_like(labels, model.null_class)]) if guided else labels
    ids = torch.full((n, L), mask_id, dtype=torch.long, device=device)
    state, w = None, 0.0
    trace_ids, trace_logp = [], []
    draw = ids
    for s in range(steps):
        r = (s + 1) / steps
        inp = torch.cat([ids, ids]) if guided else ids
        if mode == "maskgit":
            logits = model.forward_full(inp, both)
        else:
            state = model(inp, both, prev=state if reuse else None)
            logits = state.logits
        logits = logits.float()
        cond, uncond = logits.chunk(2) if guided else (logits, logits)
        logp = F.log_softmax(cond + w * (cond - uncond), dim=-1)
        masked = ids == mask_id
        if noise is not None:
            draw_s, g = noise["draws"][s].to(device), noise["gumbel"][s].to(device)
        else:
            draw_s = sample_tokens(logp, sampling_temperature(samp_temp, s, steps), generator=generator)
            g = gumbel((n, L), generator, device)
        draw = torch.where(masked, draw_s, ids)
        conf = torch.gather(logp, -1, draw.unsqueeze(-1)).squeeze(-1)
        conf = torch.where(masked, conf, torch.full_like(conf, math.inf))
        conf = conf + (mask_temp * (1 - r) * g).float()
        k = mask_count(L, s, steps)
        order = torch.argsort(conf, dim=-1)
        remask = torch.zeros_like(masked).scatter_(1, order[:, :k], True)
        if return_trace:
            trace_ids.append(ids)
            trace_logp.append(logp)
        ids = torch.where(remask, torch.full_like(draw, mask_id), draw)
        w = r * cfg_scale
    side = int(round(math.sqrt(L)))
    out = draw.reshape(n, side, side) if side * side == L else draw
    meta: dict[str, Any] = {"labels": labels}
    if return_trace:
        meta.update(ids_in=torch.stack(trace_ids), logp=trace_logp)
    return Tokens(ids=out, meta=meta)
