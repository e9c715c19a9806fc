"""The vision towers of TokenFlow's semantic branch, built from `tokenforge.nn` blocks.

- `CLIPVisionTower`: OpenAI CLIP's visual ViT (ViT-B/16 by default): ``conv1`` patchify (no bias), class token,
  absolute positions, ``ln_pre``, pre-LN blocks (QuickGELU MLP, LayerNorm eps 1e-5), ``ln_post`` on every
  token; optional ``proj`` (the joint-embedding projection, 768 -> 512) used by the distillation teacher.
  TokenFlow's encoder deletes ``proj`` and returns ``ln_post(tokens)[:, 1:]``.
- `SiglipVisionTower`: transformers' ``SiglipVisionModel`` (so400m-patch14-384 by default): patch conv with
  bias, positions without a class token, pre-LN blocks (tanh-GELU, eps 1e-6), ``post_layernorm`` and the
  attention-pooling ``head``. TokenFlow uses ``hidden_states[-2]`` (the output of the second-to-last block, no
  final norm), so the last block, ``post_layernorm`` and ``head`` are kept only so released weights load.
- `ScalingLayer`: the fixed input normalisations (``siglip``: [-1,1] -> [0,1] clamped -> (x-0.5)/0.5;
  ``clip``: CLIP mean/std), with TokenFlow's ``shift``/``scale`` buffers.
- `resize_pos_table`: DINO's trick that TokenFlow uses for both CLIP and the BEiT decoder: bicubic
  ``F.interpolate`` with ``scale_factor = (g + 0.1) / g_train`` (not a target size, which samples different
  points).

Key layouts of the official files (OpenAI ``transformer.resblocks.N.*``, transformers ``embeddings.*`` /
``encoder.layers.N.*``) are reached through `tokenforge.tokenizers.tokenflow.official`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.nn.mlp import GeluMLP
from tokenforge.nn.transformer import Block

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_pos_table(table: Tensor, grid: int) -> Tensor:
    """Patch positions ``[N, D]`` (N = g_train^2) -> ``[grid^2, D]`` by DINO's bicubic scale-factor resize."""
    trained = math.isqrt(table.shape[0])
    if trained * trained != table.shape[0]:
        raise ValueError(f"positional table has {table.shape[0]} patch rows, not a square grid")
    if trained == grid:
        return table
    factor = (grid + 0.1) / trained
    square = table.reshape(1, trained, trained, -1).permute(0, 3, 1, 2)
    out = F.interpolate(square.float(), scale_factor=(factor, factor), mode="bicubic", align_corners=False)
    if out.shape[-1] != grid:
        raise RuntimeError(f"DINO position resize gave a {out.shape[-1]} grid, expected {grid}")
    return out.to(table.dtype).permute(0, 2, 3, 1).reshape(grid * grid, -1)


class ScalingLayer(Configurable, nn.Module):
    """Fixed input normalisation: ``(clamp((x+1)/2, 0, 1) - shift) / scale`` on [-1, 1] images."""

    def __init__(self, kind: str = "siglip") -> None:
        super().__init__()
        if kind not in ("siglip", "clip"):
            raise ValueError(f"ScalingLayer kind must be 'siglip' or 'clip', got {kind!r}")
        shift, scale = ((0.5,) * 3, (0.5,) * 3) if kind == "siglip" else (CLIP_MEAN, CLIP_STD)
        self.kind = kind
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x01 = torch.clamp((x + 1.0) * 127.5, 0.0, 255.0) / 255.0
        return (x01 - self.shift) / self.scale


def _blocks(width: int, layers: int, heads: int, eps: float, mlp: str, hidden: int, qkv: str) -> nn.ModuleList:
    options = {"qkv": qkv, "qkv_bias": True, "out_bias": True}
    return nn.ModuleList(
        Block(width, heads, norm="layernorm", norm_eps=eps, mlp=mlp, mlp_hidden_dim=hidden, attn_options=options)
        for _ in range(layers)
    )


class CLIPVisionTower(Configurable, nn.Module):
    """OpenAI CLIP visual transformer; ``forward`` returns ``ln_post`` patch tokens ``[B, g*g, width]``."""

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        width: int = 768,
        layers: int = 12,
        heads: int | None = None,
        output_dim: int | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size, self.width = image_size, patch_size, width
        heads = heads or width // 64
        grid = image_size // patch_size
        self.conv1 = nn.Conv2d(3, width, patch_size, patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, width) * width**-0.5)
        self.ln_pre = nn.LayerNorm(width, eps=1e-5)
        self.blocks = _blocks(width, layers, heads, 1e-5, "quick_gelu", 4 * width, "fused")
        self.ln_post = nn.LayerNorm(width, eps=1e-5)
        self.proj = nn.Parameter(torch.randn(width, output_dim) * width**-0.5) if output_dim else None

    @property
    def out_dim(self) -> int:
        return self.width

    def grid(self, size: tuple[int, int]) -> int:
        if size[0] != size[1] or size[0] % self.patch_size:
            raise ValueError(f"CLIP tower needs square images with sides a multiple of {self.patch_size}, got {size}")
        return size[0] // self.patch_size

    def forward(self, x: Tensor, project: bool = False) -> Tensor:
        """Image ``[B,3,H,W]`` (already normalised) -> ``ln_post`` tokens without the class token.

        ``project``: multiply by ``proj`` (the teacher's 512-d CLIP embedding space).
        """
        g = self.grid(tuple(x.shape[-2:]))
        h = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(h.dtype).expand(h.shape[0], 1, -1)
        pos = self.positional_embedding
        pos = torch.cat([pos[:1], resize_pos_table(pos[1:], g)], dim=0)
        h = torch.cat([cls, h], dim=1) + pos.to(h.dtype)
        h = self.ln_pre(h)
        for block in self.blocks:
            h = block(h)
        h = self.ln_post(h)[:, 1:]
        if project:
            if self.proj is None:
                raise ValueError("this CLIP tower has no projection (output_dim=None); features are width-d")
            h = h @ self.proj.to(h.dtype)
        return h


class AttentionPoolingHead(nn.Module):
    """SigLIP's multihead attention pooling (``probe`` query, ``attention``, ``layernorm``, ``mlp``)."""

    def __init__(self, width: int, heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, width))
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width, eps=eps)
        self.mlp = GeluMLP(width, hidden, approximate="tanh")

    def forward(self, h: Tensor) -> Tensor:
        probe = self.probe.expand(h.shape[0], -1, -1)
        out = self.attention(probe, h, h, need_weights=False)[0]
        return (out + self.mlp(self.layernorm(out)))[:, 0]


class SiglipVisionTower(Configurable, nn.Module):
    """transformers' SigLIP vision model; ``forward`` returns ``hidden_states[feature_layer]`` ``[B, g*g, width]``."""

    def __init__(
        self,
        image_size: int = 384,
        patch_size: int = 14,
        width: int = 1152,
        layers: int = 27,
        heads: int = 16,
        mlp_dim: int = 4304,
        layer_norm_eps: float = 1e-6,
        use_head: bool = True,
        feature_layer: int = -2,
    ) -> None:
        super().__init__()
        self.image_size, self.patch_size, self.width = image_size, patch_size, width
        self.feature_layer = feature_layer
        grid = image_size // patch_size
        self.patch_embedding = nn.Conv2d(3, width, patch_size, patch_size)
        self.position_embedding = nn.Parameter(torch.randn(grid * grid, width) * 0.02)
        self.blocks = _blocks(width, layers, heads, layer_norm_eps, "gelu_tanh", mlp_dim, "separate")
        self.post_layernorm = nn.LayerNorm(width, eps=layer_norm_eps)
        self.head = AttentionPoolingHead(width, heads, mlp_dim, layer_norm_eps) if use_head else None
        # hidden_states has layers + 1 entries (embeddings first): how many blocks produce the feature
        self.feature_depth = feature_layer % (layers + 1)
        for module in [*self.blocks[self.feature_depth:], self.post_layernorm, self.head]:
            if module is not None:  # unused by TokenFlow: frozen, as in the official code
                module.requires_grad_(False)

    @property
    def out_dim(self) -> int:
        return self.width

    def grid(self, size: tuple[int, int]) -> int:
        if tuple(size) != (self.image_size, self.image_size):
            raise ValueError(
                f"SigLIP tower was built for {self.image_size}x{self.image_size} images (its position table has no "
                f"resizing), got {tuple(size)}; resize the input to {self.image_size} px"
            )
        return self.image_size // self.patch_size

    def forward(self, x: Tensor) -> Tensor:
        self.grid(tuple(x.shape[-2:]))
        h = self.patch_embedding(x).flatten(2).transpose(1, 2) + self.position_embedding.to(x.dtype)
        for block in self.blocks[: self.feature_depth]:
            h = block(h)
        return h

    def pooled(self, x: Tensor) -> Tensor:
        """The full tower: every block, ``post_layernorm`` and the pooling head (SigLIP's image embedding)."""
        h = self.patch_embedding(x).flatten(2).transpose(1, 2) + self.position_embedding.to(x.dtype)
        for block in self.blocks:
            h = block(h)
        h = self.post_layernorm(h)
        return self.head(h) if self.head is not None else h


__all__ = ["CLIPVisionTower", "SiglipVisionTower", "ScalingLayer", "resize_pos_table"]
