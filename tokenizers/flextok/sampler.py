"""FlexTok's rectified-flow sampler (official ``MinRFPipeline``): Euler from t=1 to 0 with CFG or APG.

``x_t = t * noise + (1 - t) * x_0`` and the model predicts ``v = noise - x_0``; for i = T..1, t = i/T,
``x <- x - v(x, t) / T``. Guidance ``s`` != 1 runs the conditional and unconditional passes as ONE batch of
2B (faster than two calls, same numbers). CFG: ``v = v_u + s (v_c - v_u)``. APG (arXiv 2410.02416, official
``perform_norm_guidance``): ``diff = v_c - v_u`` is accumulated with momentum (``running = diff + beta *
running``), its L2 norm over (C, H, W) clipped to ``norm_threshold``, split (in float64) into the parts
parallel and orthogonal to ``v_c``, and ``v = v_c + (s - 1) * (orthogonal + eta * parallel)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x, t [B], cond) -> v


def apg_update(v_c: Tensor, v_u: Tensor, running: Tensor | None, momentum: float, eta: float,
               norm_threshold: float) -> tuple[Tensor, Tensor]:
    """One APG direction ``orthogonal + eta * parallel`` and the new momentum buffer."""
    diff = v_c - v_u
    running = diff if running is None else diff + momentum * running
    diff = running
    if norm_threshold > 0:
        norm = diff.flatten(1).norm(dim=1).view(-1, *([1] * (diff.dim() - 1)))
        diff = diff * torch.clamp(norm_threshold / norm, max=1.0)
    d, c = diff.double(), v_c.double()
    unit = torch.nn.functional.normalize(c.flatten(1), dim=1).view_as(c)
    parallel = (d * unit).flatten(1).sum(1).view(-1, *([1] * (d.dim() - 1))) * unit
    orthogonal = d - parallel
    return (orthogonal + eta * parallel).to(v_c.dtype), running


def sample(
    velocity: VelocityFn, noise: Tensor, cond: Tensor, uncond: Tensor | None = None, steps: int = 25,
    guidance_scale: float | Callable[[float], float] = 1.0, apg: bool = False, momentum: float = -0.5,
    eta: float = 0.0, norm_threshold: float = 2.5,
) -> Tensor:
    """Integrate from ``noise`` (t=1) to data (t=0). ``uncond`` is needed when the guidance scale is not 1."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x, running, b = noise, None, len(noise)
    for i in range(steps, 0, -1):
        t_val = i / steps
        scale = guidance_scale(t_val) if callable(guidance_scale) else guidance_scale
        t = torch.full((b,), t_val, device=x.device, dtype=torch.float32)
        if scale == 1.0:
            v = velocity(x, t, cond)
        else:
            if uncond is None:
                raise ValueError("guidance needs the unconditional condition (uncond)")
            v_c, v_u = velocity(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond])).chunk(2)
            if apg:
                update, running = apg_update(v_c, v_u, running, momentum, eta, norm_threshold)
                v = v_c + (scale - 1) * update
            else:
                v = v_u + scale * (v_c - v_u)
        x = x - v / steps
    return x
