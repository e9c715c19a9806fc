"""WavTokenizer: single-codebook acoustic codec tokenizer (SEANet encoder, EMA VQ, Vocos decoder + iSTFT)."""

from tokenforge.tokenizers.wavtokenizer.model import WavTokenizer, check_audio
from tokenforge.tokenizers.wavtokenizer.seanet import SEANetDecoder, SEANetEncoder
from tokenforge.tokenizers.wavtokenizer.vocos import ISTFT, ISTFTHead, VocosBackbone

__all__ = ["ISTFT", "ISTFTHead", "SEANetDecoder", "SEANetEncoder", "VocosBackbone", "WavTokenizer", "check_audio"]
