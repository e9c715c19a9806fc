"""LinFusion: normalized non-causal linear attention mounted into diffusers UNets (see specs/linfusion.md)."""

from tokenforge.generators.linfusion.attention import GeneralizedLinearAttention, linear_attention
from tokenforge.generators.linfusion.linfusion import LinFusion

__all__ = ["GeneralizedLinearAttention", "LinFusion", "linear_attention"]
