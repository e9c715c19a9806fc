"""FlexTok's small layers: 2x2 patching, fixed 2D sin-cos posemb, timestep embedder, output heads.

Parameter names and shapes follow apple/ml-flextok so the official state dict maps by renaming only
(`tokenforge.tokenizers.flextok.official`): ``patch_proj``, ``posembs`` ``[1, D, h, w]`` (a persistent
buffer, as official), ``mlp.0`` / ``mlp.2``, ``adaLN_modulation.1`` (here ``adaln.linear``), ``proj``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.nn.norms import AdaLNModulation, LayerNorm, modulate


def patchify(x: Tensor, patch: int = 2) -> Tensor:
    """NCHW ``[B, C, H, W]`` -> ``[B, H/p, W/p, p*p*C]`` with the patch vector ordered (p_h, p_w, c)."""
    b, c, h, w = x.shape
    if h % patch or w % patch:
        raise ValueError(f"latent size {h}x{w} is not divisible by the patch size {patch}")
    x = x.permute(0, 2, 3, 1).reshape(b, h // patch, patch, w // patch, patch, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h // patch, w // patch, patch * patch * c)


def unpatchify(x: Tensor, channels: int, patch: int = 2) -> Tensor:
    """Inverse of `patchify`: ``[B, h, w, p*p*C]`` -> ``[B, C, h*p, w*p]``."""
    b, h, w, _ = x.shape
    x = x.reshape(b, h, w, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, h * patch, w * patch)


def sincos_posemb_2d(dim: int, h: int, w: int, temperature: float = 10000.0) -> Tensor:
    """MoCo-v3 2D sin-cos table ``[1, dim, h, w]``: channels ``[sin(y), cos(y), sin(x), cos(x)]``, dim/4 each.

    y is the row (h) index: MoCo-v3's "w" grid comes first but, built with xy meshgrid on an (h, w) grid and
    read as [h, w], it varies along rows; the official FlexTok table matches this order.
    """
    if dim % 4:
        raise ValueError(f"sin-cos posemb needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    out_x = xs.reshape(-1, 1) * omega
    out_y = ys.reshape(-1, 1) * omega
    table = torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()], dim=1)  # (h*w, dim)
    return table.T.reshape(1, dim, h, w).float()


class FlexTokPatchEmbed(Configurable, nn.Module):
    """Latents NCHW -> 2x2 patches -> ``Linear(p*p*C -> D)`` + fixed sin-cos posemb, as ``[B, h*w, D]``."""

    def __init__(self, channels: int, dim: int, max_size: int | list[int], patch: int = 2) -> None:
        super().__init__()
        self.patch = patch
        h, w = (max_size, max_size) if isinstance(max_size, int) else max_size
        self.patch_proj = nn.Linear(patch * patch * channels, dim)
        self.register_buffer("posembs", sincos_posemb_2d(dim, h, w))

    def forward(self, latents: Tensor) -> Tensor:
        x = self.patch_proj(patchify(latents, self.patch))
        h, w = x.shape[1:3]
        if h > self.posembs.shape[2] or w > self.posembs.shape[3]:
            raise ValueError(f"latent grid {h}x{w} exceeds the posemb table {tuple(self.posembs.shape[2:])}")
        x = x + self.posembs[0, :, :h, :w].permute(1, 2, 0).to(x.dtype)  # "absolute" crop
        return x.flatten(1, 2)


class FlexTokTimestepEmbedder(Configurable, nn.Module):
    """DiT timestep MLP with FlexTok's settings: ``[cos, sin]`` features, max_period 256, t scaled by 1000/max_t."""

    def __init__(self, dim: int, frequency_size: int = 256, max_period: float = 256.0, max_timestep: float = 1.0) -> None:
        super().__init__()
        self.frequency_size, self.max_period, self.max_timestep = frequency_size, max_period, max_timestep
        self.mlp = nn.Sequential(nn.Linear(frequency_size, dim), nn.SiLU(), nn.Linear(dim, dim))

    def features(self, t: Tensor) -> Tensor:
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = (t.float() * 1000.0 / self.max_timestep)[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.frequency_size % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.features(t).to(self.mlp[0].weight.dtype))


class FlexTokLinearHead(Configurable, nn.Module):
    """Affine-free LayerNorm then ``Linear(D -> out)`` with bias, zero-initialised (encoder ``enc_to_latents``)."""

    def __init__(self, dim: int, out_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = LayerNorm(dim, eps=eps, affine=False)
        self.proj = nn.Linear(dim, out_dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.norm(x))


class FlexTokToPatchesHead(Configurable, nn.Module):
    """Decoder output: LN, adaLN shift/scale from the time embedding, ``Linear(D -> p*p*C)``, unpatchify to NCHW."""

    def __init__(self, dim: int, channels: int, patch: int = 2, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.patch = channels, patch
        self.norm = LayerNorm(dim, eps=eps, affine=False)
        self.adaln = AdaLNModulation(dim, dim, "shift_scale")
        self.proj = nn.Linear(dim, patch * patch * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, patches: Tensor, temb: Tensor, grid: tuple[int, int]) -> Tensor:
        m = self.adaln(temb)
        x = self.proj(modulate(self.norm(patches), m["shift1"], m["scale1"]))
        return unpatchify(x.unflatten(1, grid), self.channels, self.patch)


def xavier_init(module: nn.Module) -> None:
    """Official init for trunk linears: xavier-uniform weights, zero biases (adaLN / heads stay zero)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


__all__ = ["FlexTokPatchEmbed", "FlexTokTimestepEmbedder", "FlexTokLinearHead", "FlexTokToPatchesHead", "patchify", "unpatchify",
           "sincos_posemb_2d", "xavier_init"]
