"""LinFusion: normalized non-causal linear attention mounted into diffusers UNets (see specs/linfusion.md)."""

from tokenforge.methods import lazy_exports

# loaded on first use, so listing methods (``method.py``) does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    "GeneralizedLinearAttention": "attention", "linear_attention": "attention", "LinFusion": "linfusion"
})

__all__ = ["GeneralizedLinearAttention", "LinFusion", "linear_attention"]
