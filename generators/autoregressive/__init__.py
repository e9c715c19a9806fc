"""Autoregressive generators over any tokenizer: next-token `GPT` (LlamaGen) and next-scale `VAR`."""

from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.generators.autoregressive.var import VAR

__all__ = ["GPT", "VAR"]
