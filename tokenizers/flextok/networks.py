"""FlexTok's three networks: the frozen VAE, the register encoder and the rectified-flow decoder.

- `FlexTokVAE`: a diffusers ``AutoencoderKL`` (official ``StableDiffusionVAE``: latents = mode or posterior
  sample times ``scaling_factor``), or ``kind="pixel"``: an exact, parameter-free space-to-depth "VAE"
  (``pixel_unshuffle`` by ``factor``). The pixel kind is ours, not official: it lets tiny configs train on CPU
  on real images without a pretrained VAE, with PSNR measured against the true input.
- `FlexTokEncoder`: 2x2 latent patches + fixed 2D sin-cos posemb, ``num_registers`` learnable registers,
  the ``causal_last`` mask (patches see patches; register j sees all patches and registers <= j), pre-norm
  blocks (affine-free fp32 LayerNorm, QK-norm, softmax scale 8/head_dim, bias-free SwiGLU), then LN + Linear
  to the FSQ dimension. ``attention``: ``"flex"`` runs the mask as a compiled FlexAttention `BlockMask`
  (`tokenforge.tokenizers.flextok.flex`), ``"sdpa"`` as a dense boolean mask through SDPA (reference,
  fallback), ``"auto"`` (default) is SDPA until flex is measured on a GPU (env ``TOKENFORGE_FLEXTOK_ATTENTION=flex``
  makes ``auto`` pick flex). The attribute may be changed after construction.
- `FlexTokDecoder`: codes -> Linear -> + learnable register posemb -> nested dropout (positions >= keep_k
  become ``mask_token``) -> optional null condition (every register -> ``nullcond``); noised latents patched
  like the encoder; one self-attention sequence [patches; registers] with adaLN-zero (one modulation set for
  patches, one for registers) from the timestep MLP; LN + adaLN + Linear head -> velocity. This sequence is
  fully visible (official mask ``full``): no mask is passed, so SDPA already uses flash; no flex path.

Deliberate difference from the official code: samples are not packed into one sequence with a
block-diagonal mask (batch dim 1, padded to 128); we keep a real batch dimension, which needs no padding and
gives the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.nn.transformer import Transformer
from tokenforge.tokenizers.flextok.flex import (
    dense_register_mask,
    flex_transformer,
    register_block_mask,
    resolve_attention,
)
from tokenforge.tokenizers.flextok.layers import (
    FlexTokLinearHead,
    FlexTokPatchEmbed,
    FlexTokTimestepEmbedder,
    FlexTokToPatchesHead,
    xavier_init,
)

# SDXL-style f8 VAE with 16 latent channels (FlexTok's c16 VAE, diffusers layout).
DEFAULT_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "act_fn": "silu",
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 256,
}


class FlexTokVAE(Configurable, nn.Module):
    """Image <-> latent map; frozen (always eval) as in the official tokenizer."""

    def __init__(
        self, kind: str = "autoencoder_kl", config: dict[str, Any] | None = None, scaling_factor: float | None = None,
        sample_posterior: bool = False, factor: int = 4,
    ) -> None:
        super().__init__()
        if kind not in ("autoencoder_kl", "pixel"):
            raise ValueError(f"FlexTokVAE kind must be 'autoencoder_kl' or 'pixel', got {kind!r}")
        self.kind, self.sample_posterior = kind, sample_posterior
        if kind == "pixel":
            self.vae = None
            self.factor, self.latent_channels = factor, 3 * factor * factor
            self.scaling_factor = 1.0 if scaling_factor is None else scaling_factor
        else:
            from diffusers import AutoencoderKL

            cfg = {k: v for k, v in (config or DEFAULT_VAE_CONFIG).items() if not k.startswith("_")}
            self.vae = AutoencoderKL.from_config(cfg)
            self.factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
            self.latent_channels = self.vae.config.latent_channels
            self.scaling_factor = scaling_factor if scaling_factor is not None else self.vae.config.scaling_factor
            self.vae.requires_grad_(False)

    def train(self, mode: bool = True) -> FlexTokVAE:
        return super().train(False)  # frozen=True: eval forever

    def encode(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> scaled latents ``[B, C, H/f, W/f]`` (no gradient)."""
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images must be float [B, 3, H, W] in [-1, 1], got {tuple(images.shape)} {images.dtype}")
        if images.shape[-1] % self.factor or images.shape[-2] % self.factor:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be divisible by {self.factor}")
        with torch.no_grad():
            if self.vae is None:
                return F.pixel_unshuffle(images, self.factor) * self.scaling_factor
            dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
            z = dist.sample() if self.sample_posterior else dist.mode()
            return z.float() * self.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        with torch.no_grad():
            if self.vae is None:
                return F.pixel_shuffle(latents / self.scaling_factor, self.factor)
            return self.vae.decode(latents.to(self.vae.dtype) / self.scaling_factor).sample.float()


def _block_options(dim: int, head_dim: int, eps: float, adaln: bool, mlp_ratio: float = 4.0) -> dict[str, Any]:
    options: dict[str, Any] = {
        "mlp": "swiglu", "mlp_hidden_dim": int(2 * mlp_ratio * dim / 3), "mlp_options": {"prefix": "fc"},
        "attn_options": {"head_dim": head_dim, "qkv": "separate", "qk_norm": "layernorm", "qk_norm_eps": eps,
                         "scale": 8.0 / head_dim},
    }
    if adaln:
        options.update(order="gates_shift_scale", adaln_groups=2, cond_dim=dim, norm_eps=eps)
    else:
        options.update(norm="layernorm", norm_eps=eps, norm_affine=False)
    return options


def _check_dims(dim: int, head_dim: int) -> None:
    if dim % head_dim:
        raise ValueError(f"dim ({dim}) must be a multiple of head_dim ({head_dim})")


class FlexTokEncoder(Configurable, nn.Module):
    """Latents ``[B, C, h, w]`` -> pre-quantisation register features ``[B, num_registers, fsq_dim]``."""

    def __init__(
        self, latent_channels: int = 16, dim: int = 768, depth: int = 12, head_dim: int = 64,
        num_registers: int = 256, fsq_dim: int = 6, max_grid: int | list[int] = 16, patch: int = 2, eps: float = 1e-5,
        mlp_ratio: float = 4.0, attention: str = "auto",
    ) -> None:
        super().__init__()
        _check_dims(dim, head_dim)
        resolve_attention(attention, torch.device("cpu"))  # validate the choice early
        self.num_registers, self.attention = num_registers, attention
        self.flex_compile = True  # False: eager flex_attention (slow; tests of the mask semantics only)
        self.patch_emb = FlexTokPatchEmbed(latent_channels, dim, max_grid, patch)
        self.registers = nn.Parameter(torch.empty(num_registers, dim))
        self.transformer = Transformer(dim, depth, dim // head_dim, block_options=_block_options(dim, head_dim, eps, False, mlp_ratio))
        self.to_latents = FlexTokLinearHead(dim, fsq_dim, eps)
        xavier_init(self.transformer)
        nn.init.xavier_uniform_(self.patch_emb.patch_proj.weight)
        nn.init.zeros_(self.patch_emb.patch_proj.bias)
        nn.init.trunc_normal_(self.registers, std=0.02)

    def backend(self, device: torch.device, needs_grad: bool = False) -> str:
        """The attention kernel a forward on ``device`` uses: ``"flex"`` or ``"sdpa"``."""
        return resolve_attention(self.attention, device, needs_grad)

    def forward(self, latents: Tensor) -> Tensor:
        patches = self.patch_emb(latents)
        n = patches.shape[1]
        x = torch.cat([patches, self.registers.to(patches.dtype).expand(len(patches), -1, -1)], dim=1)
        if self.backend(x.device, torch.is_grad_enabled() and x.requires_grad) == "flex":
            block_mask = register_block_mask(n, self.num_registers, str(x.device))
            x = flex_transformer(self.transformer, x, block_mask, compiled=self.flex_compile)
        else:
            x = self.transformer(x, mask=dense_register_mask(n, self.num_registers, device=x.device))
        return self.to_latents(x[:, n:])


class FlexTokDecoder(Configurable, nn.Module):
    """Rectified-flow velocity model conditioned on (nested-dropped) register codes."""

    def __init__(
        self, latent_channels: int = 16, dim: int = 768, depth: int = 12, head_dim: int = 64,
        num_registers: int = 256, fsq_dim: int = 6, max_grid: int | list[int] = 16, patch: int = 2, eps: float = 1e-5,
        max_timestep: float = 1.0, null_cond: str = "learned", mlp_ratio: float = 4.0, time_frequency_size: int = 256,
    ) -> None:
        super().__init__()
        _check_dims(dim, head_dim)
        if null_cond not in ("learned", "zero"):
            raise ValueError(f"null_cond must be 'learned' or 'zero', got {null_cond!r}")
        self.num_registers, self.latent_channels, self.patch = num_registers, latent_channels, patch
        self.from_latents = nn.Linear(fsq_dim, dim)
        self.register_posembs = nn.Parameter(torch.empty(1, 1, dim, num_registers))
        self.mask_token = nn.Parameter(torch.empty(dim))
        self.nullcond = nn.Parameter(torch.empty(dim)) if null_cond == "learned" else None
        self.patch_emb = FlexTokPatchEmbed(latent_channels, dim, max_grid, patch)
        self.time_embedder = FlexTokTimestepEmbedder(dim, time_frequency_size, max_timestep=max_timestep)
        self.transformer = Transformer(dim, depth, dim // head_dim, adaln=True,
                                       block_options=_block_options(dim, head_dim, eps, True, mlp_ratio))
        self.to_patches = FlexTokToPatchesHead(dim, latent_channels, patch, eps)
        xavier_init(self.transformer)
        for linear in (self.from_latents, self.patch_emb.patch_proj, self.time_embedder.mlp[0], self.time_embedder.mlp[2]):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
        for block in self.transformer.blocks:  # adaLN-zero
            nn.init.zeros_(block.adaln.linear.weight)
            nn.init.zeros_(block.adaln.linear.bias)
        for p in (self.register_posembs, self.mask_token) + ((self.nullcond,) if self.nullcond is not None else ()):
            nn.init.trunc_normal_(p, std=0.02)

    def condition(self, codes: Tensor, keep_k: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
        """Codes ``[B, R, fsq_dim]`` -> register tokens ``[B, R, D]``.

        ``keep_k`` ``[B]``: positions >= keep_k[b] become the mask token. ``drop`` ``[B]`` bool: the whole
        condition of those samples becomes the null condition (CFG's unconditional branch).
        """
        b, r = codes.shape[:2]
        if r != self.num_registers:
            raise ValueError(f"expected {self.num_registers} register codes, got {r}")
        x = self.from_latents(codes.to(self.from_latents.weight.dtype))
        x = x + self.register_posembs.sum(1)[0].T.to(x.dtype)
        if keep_k is not None:
            keep = torch.arange(r, device=x.device)[None, :] < keep_k.to(x.device)[:, None]
            x = torch.where(keep[..., None], x, self.mask_token.to(x.dtype))
        if drop is not None:
            null = self.nullcond if self.nullcond is not None else torch.zeros_like(self.mask_token)
            x = torch.where(drop.to(x.device)[:, None, None], null.to(x.dtype), x)
        return x

    def forward(self, noised: Tensor, t: Tensor, cond: Tensor, return_layer: int | None = None) -> Any:
        """Velocity ``[B, C, h, w]`` at noised latents ``noised`` and times ``t`` ``[B]`` given ``cond`` ``[B, R, D]``.

        With ``return_layer`` also return the patch features after that block (REPA).
        """
        patches = self.patch_emb(noised)
        n = patches.shape[1]
        grid = (noised.shape[2] // self.patch, noised.shape[3] // self.patch)
        t = torch.as_tensor(t, device=noised.device, dtype=torch.float32).reshape(-1).expand(len(noised))
        temb = self.time_embedder(t)
        x = torch.cat([patches, cond.to(patches.dtype)], dim=1)
        group_ids = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(cond.shape[1], dtype=torch.long)])
        group_ids = group_ids.to(x.device)
        feature = None
        for i, block in enumerate(self.transformer.blocks):
            x = block(x, temb, group_ids=group_ids)
            if i == return_layer:
                feature = x[:, :n]
        velocity = self.to_patches(x[:, :n], temb, grid)
        return (velocity, feature) if return_layer is not None else velocity
