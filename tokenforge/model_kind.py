"""The one-line refusal when a command that needs a tokenizer is given another kind of model.

Used by the tokenizer verbs (`tokenforge encode | decode | reconstruct`, through `tokenforge.model_spec`), so no
module imports a command module for it.
"""

from __future__ import annotations

from typing import Any

from tokenforge.errors import UsageError


def require_tokenizer(model: Any, spec: Any) -> None:
    """`UsageError` unless ``model`` is a tokenizer (a generator checkpoint is named as such, with its command)."""
    # imported on call, not for a cycle: tokenizers.base loads Lightning, which commands that fail early never need
    from tokenforge.generators.base import Generator
    from tokenforge.tokenizers.base import Tokenizer

    if isinstance(model, Tokenizer):
        return
    kind = type(model).__name__
    if isinstance(model, Generator):
        raise UsageError(f"--model {spec} is a generator ({kind}), not a tokenizer: sample from it with "
                         f"`tokenforge generate --generator {spec} --tokenizer TOKENIZER`; reconstruct needs a "
                         "tokenizer checkpoint")
    raise UsageError(f"--model {spec} holds a {kind}, not a tokenizer; encode, decode and reconstruct need a tokenizer "
                     "checkpoint")
