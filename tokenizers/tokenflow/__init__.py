"""TokenFlow: dual-codebook (semantic + pixel) shared-index multi-scale image tokenizer (spec: tokenflow.md)."""

from tokenforge.tokenizers.tokenflow.model import TokenFlow, TokenFlowOutput
from tokenforge.tokenizers.tokenflow.quantizer import DualCodebookQuantizer
from tokenforge.tokenizers.tokenflow.semantic import SemanticDecoder
from tokenforge.tokenizers.tokenflow.towers import CLIPVisionTower, ScalingLayer, SiglipVisionTower

__all__ = ["CLIPVisionTower", "DualCodebookQuantizer", "ScalingLayer", "SemanticDecoder", "SiglipVisionTower",
           "TokenFlow", "TokenFlowOutput"]
