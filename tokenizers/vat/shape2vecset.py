"""3DShape2VecSet's KL point-cloud autoencoder (1zb/3DShape2VecSet ``models_ae.py::KLAutoEncoder``), the public
peer of VAT's encoder (shared/specs/vat3d.md section 4), built from tokenforge layers.

Encoder: FPS picks ``num_latents`` of the surface points; their embeddings cross-attend (1 head of width dim) to
all point embeddings (+ residual), then a GEGLU FFN (+ residual); ``mean_fc`` / ``logvar_fc`` give the diagonal
Gaussian. Decoder: ``proj`` -> ``depth`` x (pre-LN self-attention + FFN, residual, drop-path) -> query-point
embeddings cross-attend to the latents (no residual) -> ``to_outputs`` occupancy logit.
Deviation: FPS starts at point 0 instead of torch_cluster's random start; callers may pass indices instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.nn.transformer import DropPath
from tokenforge.tokenizers.vat.layers import (
    DiagonalGaussian,
    PointEmbed,
    PreNormAttention,
    PreNormFeedForward,
    farthest_point_sample,
)


@dataclass
class Encoding:
    fps_idx: Tensor
    sampled_pc: Tensor
    pc_embed: Tensor
    tokens: Tensor
    posterior: DiagonalGaussian


class LatentLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, drop_path: float) -> None:
        super().__init__()
        self.attn = PreNormAttention(dim, heads, dim_head)
        self.ff = PreNormFeedForward(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.ff(x))


class Shape2VecSet(Configurable, nn.Module):
    """KL autoencoder ``[B, N, 3]`` surface points -> ``[B, M, latent_dim]`` Gaussian set -> occupancy logits."""

    def __init__(self, depth: int = 24, dim: int = 512, num_inputs: int = 2048, num_latents: int = 512,
                 latent_dim: int = 8, heads: int = 8, dim_head: int = 64, point_embed_hidden_dim: int = 48,
                 drop_path: float = 0.1) -> None:
        super().__init__()
        self.num_inputs, self.num_latents = num_inputs, num_latents
        self.point_embed = PointEmbed(dim, point_embed_hidden_dim)
        self.cross_attn = PreNormAttention(dim, 1, dim, cross=True)
        self.cross_ff = PreNormFeedForward(dim)
        self.mean_fc = nn.Linear(dim, latent_dim)
        self.logvar_fc = nn.Linear(dim, latent_dim)
        self.proj = nn.Linear(latent_dim, dim)
        self.layers = nn.ModuleList(LatentLayer(dim, heads, dim_head, drop_path) for _ in range(depth))
        self.decoder_cross_attn = PreNormAttention(dim, 1, dim, cross=True)
        self.to_outputs = nn.Linear(dim, 1)

    def encode_full(self, pc: Tensor, fps_idx: Tensor | None = None) -> Encoding:
        if pc.dim() != 3 or pc.shape[-1] != 3:
            raise ValueError(f"surface points must be [B, N, 3], got {tuple(pc.shape)}")
        count = round(self.num_latents * pc.shape[1] / self.num_inputs)  # official ratio M / N
        idx = farthest_point_sample(pc, count) if fps_idx is None else fps_idx
        sampled = torch.gather(pc, 1, idx[..., None].expand(-1, -1, 3))
        sampled_embed, pc_embed = self.point_embed(sampled), self.point_embed(pc)
        x = self.cross_attn(sampled_embed, pc_embed) + sampled_embed
        x = self.cross_ff(x) + x
        return Encoding(idx, sampled, pc_embed, x, DiagonalGaussian(self.mean_fc(x), self.logvar_fc(x)))

    def decode(self, latents: Tensor, queries: Tensor) -> Tensor:
        """``[B, M, latent_dim]`` latents, ``[B, Q, 3]`` queries -> ``[B, Q]`` occupancy logits."""
        x = self.proj(latents)
        for layer in self.layers:
            x = layer(x)
        q = self.point_embed(queries)
        return self.to_outputs(self.decoder_cross_attn(q, x)).squeeze(-1)

    def forward(self, pc: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
        """Sampled-latent logits ``[B, Q]`` and per-sample KL ``[B]``."""
        enc = self.encode_full(pc)
        return self.decode(enc.posterior.sample(), queries), enc.posterior.kl()


def official_key_map(key: str) -> str | None:
    """3DShape2VecSet state-dict key -> `Shape2VecSet` key."""
    import re

    rules = [
        (r"^cross_attend_blocks\.0\.fn\.to_q\.", "cross_attn.attn.q."),
        (r"^cross_attend_blocks\.0\.fn\.to_kv\.", "cross_attn.attn.kv."),
        (r"^cross_attend_blocks\.0\.fn\.to_out\.", "cross_attn.attn.proj."),
        (r"^cross_attend_blocks\.0\.", "cross_attn."),
        (r"^cross_attend_blocks\.1\.fn\.net\.0\.", "cross_ff.ff.fc1."),
        (r"^cross_attend_blocks\.1\.fn\.net\.2\.", "cross_ff.ff.fc2."),
        (r"^cross_attend_blocks\.1\.", "cross_ff."),
        (r"^layers\.(\d+)\.0\.fn\.to_q\.", r"layers.\1.attn.attn.q."),
        (r"^layers\.(\d+)\.0\.fn\.to_kv\.", r"layers.\1.attn.attn.kv."),
        (r"^layers\.(\d+)\.0\.fn\.to_out\.", r"layers.\1.attn.attn.proj."),
        (r"^layers\.(\d+)\.0\.", r"layers.\1.attn."),
        (r"^layers\.(\d+)\.1\.fn\.net\.0\.", r"layers.\1.ff.ff.fc1."),
        (r"^layers\.(\d+)\.1\.fn\.net\.2\.", r"layers.\1.ff.ff.fc2."),
        (r"^layers\.(\d+)\.1\.", r"layers.\1.ff."),
        (r"^decoder_cross_attn\.fn\.to_q\.", "decoder_cross_attn.attn.q."),
        (r"^decoder_cross_attn\.fn\.to_kv\.", "decoder_cross_attn.attn.kv."),
        (r"^decoder_cross_attn\.fn\.to_out\.", "decoder_cross_attn.attn.proj."),
    ]
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key
