"""The Generator contract: tokens in (training), tokens out (sampling), and the Pipeline that decodes them."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.tokenizers.base import Tokenizer, Tokens


class HeldOutLoss:
    """What `tokenforge evaluate` measures on held-out token shards: ``nll(batch) -> (summed loss, count)``.

    The mean is reported under ``nll_metric`` (nats per token for discrete generators, ``loss`` for continuous
    ones), with ``nll_note`` and ``nll_protocol(**options)`` in ``metrics.json``. ``nll_options`` names the
    evaluate options that ``nll`` reads besides ``seed``; ``needs_tokenizer`` asks for `attach_tokenizer` first.
    """

    nll_metric = "nll_nats_per_token"
    nll_note: str | None = None
    nll_options: tuple[str, ...] = ()
    needs_tokenizer = False

    def nll(self, batch: dict[str, Any], *, seed: int = 0, **options: Any) -> tuple[Tensor, int]:
        """(summed loss of ``batch``, number of tokens or items it covers); ``seed`` fixes any randomness."""
        raise TypeError(f"no token likelihood for {type(self).__name__} on a batch with {sorted(batch)}")

    def nll_protocol(self, **options: Any) -> dict[str, Any]:
        """Settings of ``nll`` that ``metrics.json`` records in its protocol."""
        return {}

    def attach_tokenizer(self, tokenizer: nn.Module) -> None:
        """Keep what ``nll`` needs from the tokenizer that wrote the ids (``needs_tokenizer``); default nothing."""


class Generator(HeldOutLoss, Configurable, nn.Module):
    """Inference side of a generator, one contract for every method.

    ``generate(n, condition=None, **sampling) -> Tokens``: ``n`` samples (ids, or ``latents`` for continuous
    generators) for ``condition`` (class ids ``[n]``, caption features, or None: the method's default, e.g. random
    classes). Every generator accepts the keywords ``generator`` (a seeded ``torch.Generator``) and ``progress``
    (bool); the rest of ``sampling`` are the method's own options (its ``generate`` options in ``method.py``).
    ``nll(batch) -> (sum, count)`` is the held-out loss (`HeldOutLoss`).
    """

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
    """A generator and the tokenizer that decodes its tokens: ``sample(n, condition)`` returns data.

    A generator that samples through its tokenizer (``needs_tokenizer``, e.g. a multi-scale quantizer) gets it
    attached here, so ``generate`` needs no tokenizer argument.
    """

    def __init__(self, tokenizer: Tokenizer, generator: Generator) -> None:
        self.tokenizer, self.generator = tokenizer, generator
        if getattr(generator, "needs_tokenizer", False):
            generator.attach_tokenizer(tokenizer)

    @torch.no_grad()
    def sample(self, n: int, condition: Tensor | None = None, *, with_tokens: bool = False,
               **sampling: Any) -> Tensor | tuple[Tokens, Any]:
        """Decoded samples (images ``[n, C, H, W]`` in [-1, 1], audio, meshes); ``with_tokens`` also returns the
        generated `Tokens`, as ``(tokens, data)``."""
        tokens = self.generator.generate(n, condition, **sampling)
        device = next(self.tokenizer.parameters(), torch.empty(0)).device
        data = self.tokenizer.decode(tokens.to(device))
        return (tokens, data) if with_tokens else data
