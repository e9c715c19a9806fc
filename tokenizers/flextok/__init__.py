"""FlexTok: images into 1..256 ordered 1D FSQ tokens, decoded by a rectified-flow transformer.

``from tokenforge.tokenizers.flextok import FlexTok``; official checkpoints load with
``tokenforge.hub.from_official("flextok", path)`` (`tokenforge.tokenizers.flextok.official`).
"""

from tokenforge.tokenizers.flextok.model import FlexTok
from tokenforge.tokenizers.flextok.networks import FlexTokDecoder, FlexTokEncoder, FlexTokVAE

__all__ = ["FlexTok", "FlexTokEncoder", "FlexTokDecoder", "FlexTokVAE"]
