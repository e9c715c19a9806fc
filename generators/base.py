"""The Generator contract: tokens in (training), tokens out (sampling), and the Pipeline that decodes them."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.tokenizers.base import Tokenizer, Tokens


class Generator(Configurable, nn.Module):
    """Inference side of a generator: ``generate(n, condition, **sampling) -> Tokens``."""

    def generate(self, n: int, condition: Tensor | None = None, **sampling: Any) -> Tokens:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> Generator:
        from tokenforge.hub import from_pretrained

        module = from_pretrained(name_or_path, **kwargs)
        if not isinstance(module, cls):
            raise TypeError(f"{name_or_path} holds a {type(module).__name__}, not a {cls.__name__}")
        return module


class Pipeline:
    """A generator and the tokenizer that decodes its tokens: ``sample(n, condition)`` returns data."""

    def __init__(self, tokenizer: Tokenizer, generator: Generator) -> None:
        self.tokenizer, self.generator = tokenizer, generator

    @torch.no_grad()
    def sample(self, n: int, condition: Tensor | None = None, **sampling: Any) -> Tensor:
        tokens = self.generator.generate(n, condition, **sampling)
        return self.tokenizer.decode(tokens)
