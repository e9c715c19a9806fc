"""VQGAN image tokenizer (taming / LlamaGen / VAR VQVAE): inference model, networks, Lightning module.

``from tokenforge.tokenizers.vqgan import VQGAN`` for inference; `VQGANModule` trains it; official
LlamaGen and VAR checkpoints load through ``tokenforge.hub.from_official("llamagen_vq" | "var_vqvae", path)``.
"""

from tokenforge.tokenizers.vqgan.model import VQGAN
from tokenforge.tokenizers.vqgan.networks import Decoder, Encoder

__all__ = ["VQGAN", "Encoder", "Decoder"]
