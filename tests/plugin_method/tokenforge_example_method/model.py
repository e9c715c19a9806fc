"""The stand-in method's tokenizer: a real, tiny image tokenizer with no training.

Each ``patch`` x ``patch`` block becomes one token: its mean colour, each channel rounded to one of ``levels``
values in [-1, 1]; the id packs the three levels (``vocab_size = levels ** 3``). Decoding paints every block
with its colour. Enough to run every tokenizer verb on real images, as a third party's method would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenforge.tokenizers.base import Tokens, Tokenizer


class ExampleCodec(Tokenizer):
    modality = "image"
    token_layout = "grid"

    def __init__(self, patch: int = 4, levels: int = 8) -> None:
        super().__init__()
        self.patch, self.levels = patch, levels
        self.register_buffer("palette", torch.linspace(-1.0, 1.0, levels))

    @property
    def vocab_size(self) -> int:
        return self.levels ** 3

    def encode(self, x: Tensor) -> Tokens:
        """Images ``[B, 3, H, W]`` in [-1, 1] (H, W multiples of ``patch``) -> ids ``[B, H/patch, W/patch]``."""
        levels = ((F.avg_pool2d(x, self.patch) + 1) / 2 * (self.levels - 1)).round().clamp(0, self.levels - 1).long()
        ids = (levels[:, 0] * self.levels + levels[:, 1]) * self.levels + levels[:, 2]
        return Tokens(ids=ids, meta={"image_size": list(x.shape[-2:])})

    def decode(self, tokens: Tokens | Tensor) -> Tensor:
        ids = tokens.ids if isinstance(tokens, Tokens) else tokens
        channels = torch.stack([ids // self.levels ** 2, ids // self.levels % self.levels, ids % self.levels], dim=1)
        return F.interpolate(self.palette[channels], scale_factor=self.patch, mode="nearest")
