"""TokenFlow: dual-codebook (semantic + pixel) shared-index multi-scale image tokenizer (spec: tokenflow.md)."""

from tokenforge.methods import lazy_exports

# loaded on first use, so listing methods (``method.py``) does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    "TokenFlow": "model", "TokenFlowOutput": "model", "DualCodebookQuantizer": "quantizer",
    "SemanticDecoder": "semantic", "CLIPVisionTower": "towers", "ScalingLayer": "towers",
    "SiglipVisionTower": "towers"
})

__all__ = ["CLIPVisionTower", "DualCodebookQuantizer", "ScalingLayer", "SemanticDecoder", "SiglipVisionTower",
           "TokenFlow", "TokenFlowOutput"]
