"""Autoregressive generators over any tokenizer: next-token `GPT` (LlamaGen) and next-scale `VAR`."""

from tokenforge.methods import lazy_exports

# loaded on first use, so listing methods (``method.py``) does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {"GPT": "gpt", "VAR": "var"})

__all__ = ["GPT", "VAR"]
