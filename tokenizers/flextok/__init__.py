"""FlexTok: images into 1..256 ordered 1D FSQ tokens, decoded by a rectified-flow transformer.

``from tokenforge.tokenizers.flextok import FlexTok``; official checkpoints load with
``tokenforge.hub.from_official("flextok", path)`` (`tokenforge.tokenizers.flextok.official`).
"""

from tokenforge.methods import lazy_exports

# loaded on first use, so listing methods (``method.py``) does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    "FlexTok": "model", "FlexTokDecoder": "networks", "FlexTokEncoder": "networks", "FlexTokVAE": "networks"
})

__all__ = ["FlexTok", "FlexTokEncoder", "FlexTokDecoder", "FlexTokVAE"]
