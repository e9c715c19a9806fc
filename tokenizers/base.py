"""The Tokenizer contract: data in, tokens out, and back.

Every tokenizer is an inference ``nn.Module`` (this file's `Tokenizer`) plus a Lightning module that trains
it. ``encode`` returns `Tokens`; ``decode`` inverts it; ``forward`` is the training pass and returns an
`AutoencoderOutput` that the shared training step turns into losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tokenforge.config import Configurable


@dataclass
class Tokens:
    """What a tokenizer emits and a generator produces.

    ``ids``: LongTensor ``[B,h,w]`` (grid), ``[B,L]`` (sequence) or a list of per-scale tensors (scales).
    ``latents``: continuous codes, when the method has them. ``lengths``: per-sample valid lengths for
    flexible-length tokenizers. ``meta``: facts a decoder needs (sample rate, scales, image size...).
    """

    ids: Tensor | list[Tensor] | None = None
    latents: Tensor | None = None
    lengths: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Tokens:
        ids = [t.to(device) for t in self.ids] if isinstance(self.ids, list) else _maybe_to(self.ids, device)
        return Tokens(ids, _maybe_to(self.latents, device), _maybe_to(self.lengths, device), dict(self.meta))

    @property
    def batch_size(self) -> int:
        first = self.ids[0] if isinstance(self.ids, list) else self.ids
        first = first if first is not None else self.latents
        return 0 if first is None else first.shape[0]


def _maybe_to(t: Tensor | None, device: torch.device | str) -> Tensor | None:
    return None if t is None else t.to(device)


@dataclass
class AutoencoderOutput:
    """The training pass of a tokenizer: reconstruction, tokens, and the quantizer's own loss and metrics."""

    x_hat: Tensor
    tokens: Tokens
    aux_loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Tokenizer(Configurable, nn.Module):
    """Inference side of a tokenizer. Subclasses set ``modality`` and ``token_layout``."""

    modality: ClassVar[str]  # "image" | "audio" | "mesh"
    token_layout: ClassVar[str]  # "grid" | "sequence" | "scales"

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tokens:
        raise NotImplementedError

    def decode(self, tokens: Tokens) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> AutoencoderOutput:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> Tokenizer:
        from tokenforge.hub import from_pretrained

        module = from_pretrained(name_or_path, **kwargs)
        if not isinstance(module, cls):
            raise TypeError(f"{name_or_path} holds a {type(module).__name__}, not a {cls.__name__}")
        return module
