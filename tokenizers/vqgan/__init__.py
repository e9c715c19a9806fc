"""VQGAN image tokenizer (taming / LlamaGen / VAR VQVAE): inference model, networks, Lightning module.

``from tokenforge.tokenizers.vqgan import VQGAN`` for inference; `VQGANModule` trains it; official
LlamaGen and VAR checkpoints load through ``tokenforge.hub.from_official("llamagen_vq" | "var_vqvae", path)``.
"""

from tokenforge.methods import lazy_exports

# loaded on first use, so listing methods (``method.py``) does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {"VQGAN": "model", "Decoder": "networks", "Encoder": "networks"})

__all__ = ["VQGAN", "Encoder", "Decoder"]
