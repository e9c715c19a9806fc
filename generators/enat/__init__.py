"""ENAT: efficient non-autoregressive generation (visible/mask disentangling, computation reuse)."""

from tokenforge.generators.enat.model import ENAT, ENATBlock, ENATState
from tokenforge.generators.enat.sampler import enat_generate, mask_count

__all__ = ["ENAT", "ENATBlock", "ENATState", "enat_generate", "mask_count"]
