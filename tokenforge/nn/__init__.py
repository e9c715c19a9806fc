"""Layers shared by tokenforge's tokenizers and generators, written once.

attention (SDPA multi-head attention, masks, static KV cache), rope (1D and LlamaGen 2D rotary tables),
norms (RMSNorm, float32 LayerNorm, AdaLayerNorm, adaLN modulation), mlp (SwiGLU, GELU MLP), transformer
(pre-norm and adaLN blocks, a stack), conv1d (EnCodec-style padded convs, SEANet and Vocos blocks).
The 2D VQGAN conv blocks live in `tokenforge.nn.conv2d`.
"""

from tokenforge.nn.attention import Attention, KVCache, block_causal_mask, causal_mask
from tokenforge.nn.conv1d import (
    AttnBlock1d,
    Conv1d,
    ConvNeXt1dBlock,
    ConvTranspose1d,
    ResnetBlock1d,
    ConvResidualUnit1d,
    SLSTM,
    convert_weight_norm_keys,
    extra_padding,
    pad1d,
)
from tokenforge.nn.mlp import GeluMLP, SwiGLU, find_multiple, make_mlp, swiglu_hidden_dim
from tokenforge.nn.norms import (
    ADALN_ORDERS,
    AdaLayerNorm,
    AdaLNModulation,
    LayerNorm,
    RMSNorm,
    make_norm,
    modulate,
)
from tokenforge.nn.rope import apply_rope, rope_frequencies, rope_table_1d, rope_table_2d
from tokenforge.nn.transformer import AdaLNBlock, Block, DropPath, Transformer

__all__ = [
    "ADALN_ORDERS", "AdaLNBlock", "AdaLNModulation", "AdaLayerNorm", "Attention", "AttnBlock1d", "Block",
    "Conv1d", "ConvNeXt1dBlock", "ConvTranspose1d", "DropPath", "GeluMLP", "KVCache", "LayerNorm", "RMSNorm",
    "ResnetBlock1d", "ConvResidualUnit1d", "SLSTM", "SwiGLU", "Transformer", "apply_rope", "block_causal_mask",
    "causal_mask", "convert_weight_norm_keys", "extra_padding", "find_multiple", "make_mlp", "make_norm",
    "modulate", "pad1d", "rope_frequencies", "rope_table_1d", "rope_table_2d", "swiglu_hidden_dim",
]
