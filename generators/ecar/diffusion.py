"""ADM/DiT Gaussian diffusion as MAR's DiffLoss uses it: cosine schedule, eps prediction, learned-range variance
(or, with ``learn_sigma=False``, ADM's fixed-large variance and an MSE-only loss).

What MAR needs and nothing more: `space_timesteps` / respaced betas (``SpacedDiffusion``), ``q_sample``,
``p_mean_variance`` with LEARNED_RANGE variance, the training loss ``mse + vb`` (the VB term on a detached mean,
in bits; the decoder NLL at t = 0) and one reverse step ``p_sample`` with MAR's temperature on the noise. The
schedule is kept in float64 and read as float32 per timestep, as the official ``_extract_into_tensor`` does.
The network is called with the ORIGINAL timestep (``timestep_map[t]``), the schedule with the respaced index.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Net = Callable[..., Tensor]


def cosine_betas(num_steps: int, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal's cosine schedule (offset 0.008), float64."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float64)


def linear_betas(num_steps: int) -> Tensor:
    scale = 1000 / num_steps
    return torch.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=torch.float64)


def space_timesteps(num_steps: int, section_counts: str | list[int]) -> list[int]:
    """ADM's even spacing: ``"10"`` keeps 10 of ``num_steps`` steps (rounded strides, first and last kept)."""
    if isinstance(section_counts, str):
        section_counts = [int(x) for x in section_counts.split(",")] if section_counts else [num_steps]
    size_per, extra = divmod(num_steps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot take {count} steps from a section of {size}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        steps += [start + round(stride * k) for k in range(count)]
        start += size
    return sorted(set(steps))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """Log-likelihood of ``x`` in [-1, 1] under a Gaussian discretised to 8-bit bins (ADM)."""
    centered, inv_std = x - means, torch.exp(-log_scales)
    cdf_plus = _approx_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: Tensor) -> Tensor:
    return x.mean(dim=tuple(range(1, x.dim())))


class GaussianDiffusion:
    """A (respaced) diffusion over ``len(timestep_map)`` steps of a ``num_steps`` base schedule."""

    def __init__(self, num_steps: int = 1000, schedule: str = "cosine", respacing: str | list[int] = "",
                 learn_sigma: bool = True) -> None:
        if schedule not in ("cosine", "linear"):
            raise ValueError(f"schedule must be 'cosine' or 'linear', got {schedule!r}")
        base = cosine_betas(num_steps) if schedule == "cosine" else linear_betas(num_steps)
        base_ac = torch.cumprod(1.0 - base, dim=0)
        keep = space_timesteps(num_steps, respacing)
        betas, last = [], 1.0
        for i in keep:  # SpacedDiffusion: betas that reproduce the kept alphas_cumprod
            betas.append(1.0 - base_ac[i].item() / last)
            last = base_ac[i].item()
        self.timestep_map = torch.tensor(keep, dtype=torch.long)
        self.betas = torch.tensor(betas, dtype=torch.float64)
        self.num_timesteps = len(betas)
        b = self.betas
        ac = torch.cumprod(1.0 - b, dim=0)
        ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
        self.sqrt_ac, self.sqrt_1m_ac = ac.sqrt(), (1.0 - ac).sqrt()
        self.sqrt_recip_ac, self.sqrt_recipm1_ac = (1.0 / ac).sqrt(), (1.0 / ac - 1).sqrt()
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        self.post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
        self.post_coef1 = b * ac_prev.sqrt() / (1.0 - ac)
        self.post_coef2 = (1.0 - ac_prev) * (1.0 - b).sqrt() / (1.0 - ac)
        self.log_betas = torch.log(b)
        self.learn_sigma = learn_sigma  # False: ADM's FIXED_LARGE variance, loss = MSE only
        self.fixed_logvar = torch.log(torch.cat([post_var[1:2], b[1:]]))

    @staticmethod
    def _at(arr: Tensor, t: Tensor, like: Tensor) -> Tensor:
        out = arr.to(t.device)[t].float()
        return out.reshape(out.shape + (1,) * (like.dim() - 1))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return self._at(self.sqrt_ac, t, x0) * x0 + self._at(self.sqrt_1m_ac, t, x0) * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        mean = self._at(self.post_coef1, t, xt) * x0 + self._at(self.post_coef2, t, xt) * xt
        return mean, self._at(self.post_logvar, t, xt)

    def model_out(self, net: Net, x: Tensor, t: Tensor, **kwargs) -> Tensor:
        return net(x, self.timestep_map.to(t.device)[t], **kwargs)

    def p_mean_variance(self, output: Tensor, x: Tensor, t: Tensor) -> dict[str, Tensor]:
        """Mean, log-variance and x0 from the network's ``(eps, v)`` output (LEARNED_RANGE, no clipping)."""
        c = x.shape[1]
        want = 2 * c if self.learn_sigma else c
        if output.shape[1] != want:
            raise ValueError(f"the network must output {want} channels (eps{', variance' if self.learn_sigma else ''}),"
                             f" got {output.shape[1]}")
        eps = output[:, :c]
        if self.learn_sigma:
            frac = (output[:, c:] + 1) / 2
            logvar = frac * self._at(self.log_betas, t, x) + (1 - frac) * self._at(self.post_logvar, t, x)
        else:
            logvar = self._at(self.fixed_logvar, t, x).expand_as(x)
        pred_x0 = self._at(self.sqrt_recip_ac, t, x) * x - self._at(self.sqrt_recipm1_ac, t, x) * eps
        mean, _ = self.q_posterior(pred_x0, x, t)
        return {"mean": mean, "log_variance": logvar, "pred_xstart": pred_x0}

    def training_losses(self, net: Net, x0: Tensor, t: Tensor, noise: Tensor | None = None, **kwargs) -> dict[str, Tensor]:
        """``{"loss", "mse", "vb"}`` per sample; ``vb`` trains the variance only (the mean is detached)."""
        noise = torch.randn_like(x0) if noise is None else noise
        xt = self.q_sample(x0, t, noise)
        out = self.model_out(net, xt, t, **kwargs)
        c = x0.shape[1]
        mse = _mean_flat((noise - out[:, :c]) ** 2)
        if not self.learn_sigma:
            return {"loss": mse, "mse": mse}
        frozen = torch.cat([out[:, :c].detach(), out[:, c:]], dim=1)
        true_mean, true_logvar = self.q_posterior(x0, xt, t)
        p = self.p_mean_variance(frozen, xt, t)
        kl = _mean_flat(normal_kl(true_mean, true_logvar, p["mean"], p["log_variance"])) / math.log(2.0)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        return {"loss": mse + vb, "mse": mse, "vb": vb}

    def p_sample(self, net: Net, x: Tensor, t: Tensor, temperature: float = 1.0, noise: Tensor | None = None,
                 **kwargs) -> dict[str, Tensor]:
        """One reverse step at respaced index ``t``; MAR scales the added noise by ``temperature``."""
        p = self.p_mean_variance(self.model_out(net, x, t, **kwargs), x, t)
        noise = torch.randn_like(x) if noise is None else noise
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.dim() - 1)))
        sample = p["mean"] + nonzero * torch.exp(0.5 * p["log_variance"]) * noise * temperature
        return {"sample": sample, "pred_xstart": p["pred_xstart"]}

    @torch.no_grad()
    def sample(self, net: Net, noise: Tensor, temperature: float = 1.0, **kwargs) -> Tensor:
        """The full reverse chain from ``noise`` (MAR's ``p_sample_loop``)."""
        x = noise
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            x = self.p_sample(net, x, t, temperature, **kwargs)["sample"]
        return x
