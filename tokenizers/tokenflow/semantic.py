"""TokenFlow's semantic decoder (BEiT-v2 VQ-KD style ViT) and the Linear-Tanh-Linear task layers.

`SemanticDecoder`: a 1x1 conv "patch embedding" of the quantised semantic map (``patch_embed``), a learnable
class token, an absolute ``pos_embed`` sized for the training grid (resized with DINO's scale-factor trick
for other grids, `resize_pos_table`), pre-norm blocks (LayerNorm eps 1e-6, exact GELU MLP, qkv without bias
plus ``q_bias``/``v_bias`` with a zero key bias), no layer scale, no relative positions, then ``fc_norm``
on the patch tokens (BEiT's mean-pooling layout with ``return_patch_tokens``; its ``norm`` is Identity).
The blocks are `tokenforge.nn.transformer.Block`s, whose keys (``norm1, attn.qkv, attn.q_bias, attn.v_bias,
attn.proj, norm2, mlp.fc1, mlp.fc2``) equal BEiT's; only the non-persistent-in-BEiT zero key bias
(``attn.zero_k_bias``) is ours. Init as BEiT: trunc-normal 0.02, ``attn.proj``/``mlp.fc2`` weights divided by
sqrt(2 * layer_id).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.nn.transformer import Block
from tokenforge.tokenizers.tokenflow.towers import resize_pos_table


def task_layer(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear(in, in) -> Tanh -> Linear(in, out), trunc-normal 0.02 weights and zero biases (keys ``0``, ``2``)."""
    layer = nn.Sequential(nn.Linear(in_dim, in_dim), nn.Tanh(), nn.Linear(in_dim, out_dim))
    for linear in (layer[0], layer[2]):
        nn.init.trunc_normal_(linear.weight, std=0.02)
        nn.init.zeros_(linear.bias)
    return layer


class SemanticDecoder(Configurable, nn.Module):
    """Quantised semantic map ``[B, in_chans, g, g]`` -> patch tokens ``[B, g*g, embed_dim]``."""

    def __init__(
        self,
        in_chans: int = 32,
        embed_dim: int = 768,
        depth: int = 3,
        num_heads: int = 12,
        img_size: int = 14,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, img_size * img_size + 1, embed_dim))
        options = {"qkv": "fused", "qv_bias": True, "out_bias": True}
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, norm="layernorm", norm_eps=1e-6, mlp="gelu",
                  mlp_hidden_dim=int(embed_dim * mlp_ratio), attn_options=options)
            for _ in range(depth)
        )
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for layer_id, block in enumerate(self.blocks, start=1):
            block.attn.proj.weight.data.div_(math.sqrt(2.0 * layer_id))
            block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer_id))

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 4 or z.shape[-1] != z.shape[-2]:
            raise ValueError(f"SemanticDecoder expects a square map [B, C, g, g], got {tuple(z.shape)}")
        g = z.shape[-1]
        h = self.patch_embed(z).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.to(h.dtype).expand(h.shape[0], -1, -1), h], dim=1)
        pos = self.pos_embed[0]
        pos = torch.cat([pos[:1], resize_pos_table(pos[1:], g)], dim=0)
        h = h + pos.to(h.dtype)
        for block in self.blocks:
            h = block(h)
        return self.fc_norm(h[:, 1:])
