"""MAR's per-token diffusion head: ``SimpleMLPAdaLN`` (official key names) and ``DiffLoss`` (net + diffusion).

The MLP: sinusoidal timestep embedding (256, cos first) -> 2-layer SiLU MLP, plus ``cond_embed(c)``; ``depth``
residual blocks (LayerNorm eps 1e-6 with affine -> adaLN shift/scale -> Linear-SiLU-Linear -> gated residual) and
a final no-affine LayerNorm + adaLN + Linear to ``out_channels`` (2C with learned variance).
`DiffLoss.forward` is MAR's training loss: every token repeated ``batch_mul`` times with fresh t and noise, mean
of ``mse + vb`` (optionally masked). `DiffLoss.sample` runs the respaced reverse chain with eps-only CFG.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.generators.ecar.diffusion import GaussianDiffusion
from tokenforge.nn.norms import modulate


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """DiT/MAR sinusoidal embedding of (float) timesteps: ``[cos, sin]`` halves (a zero column if dim is odd)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


class ResBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_ln = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SimpleMLPAdaLN(Configurable, nn.Module):
    """Per-token denoiser ``net(x (N,C), t (N,), c (N,z)) -> (N, out)``; adaLN / output layers zero-initialised."""

    def __init__(self, in_channels: int = 16, width: int = 1024, depth: int = 6, cond_dim: int = 768,
                 out_channels: int | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels or 2 * in_channels
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(in_channels, width)
        self.res_blocks = nn.ModuleList([ResBlock(width) for _ in range(depth)])
        self.final_layer = FinalLayer(width, self.out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.time_embed.mlp[0::2]:
            nn.init.normal_(m.weight, std=0.02)
        for block in list(self.res_blocks) + [self.final_layer]:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        y = self.time_embed(t) + self.cond_embed(c)
        x = self.input_proj(x)
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)

    def forward_with_cfg(self, x: Tensor, t: Tensor, c: Tensor, cfg_scale: float) -> Tensor:
        """Rows ``[:N/2]`` conditional, ``[N/2:]`` unconditional; guided eps for both halves, variance as is."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half]), t, c)
        eps, rest = out[:, : self.in_channels], out[:, self.in_channels:]
        cond, uncond = eps.chunk(2)
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([guided, guided]), rest], dim=1)


class DiffLoss(Configurable, nn.Module):
    """MAR's diffusion loss on continuous tokens: ``net`` + cosine 1000-step training / respaced sampling."""

    def __init__(self, token_dim: int = 16, cond_dim: int = 768, width: int = 1024, depth: int = 6,
                 num_sampling_steps: str = "100", schedule: str = "cosine", diffusion_steps: int = 1000,
                 learn_sigma: bool = True) -> None:
        super().__init__()
        self.net = SimpleMLPAdaLN(token_dim, width, depth, cond_dim, (2 if learn_sigma else 1) * token_dim)
        self.train_diffusion = GaussianDiffusion(diffusion_steps, schedule, "", learn_sigma)
        self.gen_diffusion = GaussianDiffusion(diffusion_steps, schedule, num_sampling_steps, learn_sigma)

    def forward(self, target: Tensor, z: Tensor, mask: Tensor | None = None, batch_mul: int = 1) -> Tensor:
        """Mean loss over tokens ``target (N,C)`` with conditions ``z (N,D)``; ``mask (N,)`` weights tokens."""
        if batch_mul > 1:
            target, z = target.repeat(batch_mul, 1), z.repeat(batch_mul, 1)
            mask = mask.repeat(batch_mul) if mask is not None else None
        t = torch.randint(0, self.train_diffusion.num_timesteps, (target.shape[0],), device=target.device)
        loss = self.train_diffusion.training_losses(self.net, target, t, c=z)["loss"]
        if mask is None:
            return loss.mean()
        return (loss * mask).sum() / mask.sum().clamp(min=1)

    @torch.no_grad()
    def sample(self, z: Tensor, temperature: float = 1.0, cfg: float = 1.0) -> Tensor:
        """Tokens for conditions ``z``; with ``cfg != 1`` the rows are ``[cond; uncond]`` (MAR's layout)."""
        c = self.net.in_channels
        noise = torch.randn(z.shape[0], c, device=z.device, dtype=z.dtype)
        if cfg != 1.0:
            noise = torch.cat([noise[: len(noise) // 2]] * 2)
            def fn(x: Tensor, t: Tensor, c: Tensor) -> Tensor:
                return self.net.forward_with_cfg(x, t, c, cfg)
        else:
            fn = self.net
        return self.gen_diffusion.sample(fn, noise, temperature, c=z)
