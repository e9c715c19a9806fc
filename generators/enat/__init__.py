"""ENAT: efficient non-autoregressive generation (visible/mask disentangling, computation reuse)."""

from tokenforge.methods import lazy_exports

# loaded on first use, so listing methods (``method.py``) does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    "ENAT": "model", "ENATBlock": "model", "ENATState": "model", "enat_generate": "sampler",
    "mask_count": "sampler"
})

__all__ = ["ENAT", "ENATBlock", "ENATState", "enat_generate", "mask_count"]
