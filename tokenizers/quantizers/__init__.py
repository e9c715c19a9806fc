"""Quantizers: one return convention (`QuantizerOutput`) for VQ, FSQ and VAR-style multi-scale residual VQ."""

from tokenforge.tokenizers.quantizers.base import Quantizer, QuantizerOutput
from tokenforge.tokenizers.quantizers.fsq import FSQ
from tokenforge.tokenizers.quantizers.residual import MultiScaleResidualQuantizer
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer

__all__ = ["FSQ", "MultiScaleResidualQuantizer", "Quantizer", "QuantizerOutput", "VectorQuantizer"]
