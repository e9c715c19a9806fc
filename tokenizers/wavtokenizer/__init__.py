"""WavTokenizer: single-codebook acoustic codec tokenizer (SEANet encoder, EMA VQ, Vocos decoder + iSTFT)."""

from tokenforge.methods import lazy_exports

# loaded on first use, so listing methods (``method.py``) does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    "WavTokenizer": "model", "check_audio": "model", "SEANetDecoder": "seanet", "SEANetEncoder": "seanet",
    "ISTFT": "vocos", "ISTFTHead": "vocos", "VocosBackbone": "vocos"
})

__all__ = ["ISTFT", "ISTFTHead", "SEANetDecoder", "SEANetEncoder", "VocosBackbone", "WavTokenizer", "check_audio"]
