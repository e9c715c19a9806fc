"""E-CAR (continuous multistage AR with a multistage flow head), its DiT baseline and its public peer MAR.

``ECAR`` (model.py) generates latents stage by stage; ``FlowDiT`` (dit.py) is the matched DiT baseline with the
same flow objective; ``MAR`` / ``DiffLoss`` (mar.py, diffloss.py, diffusion.py) reproduce MAR's official code
(``from_official("mar", path)``, parity fixture ``mar``); ``ECARModule`` (module.py) trains any of them on latent
token shards; ``tokenforge generate`` samples (E-CAR and DiT), ``tokenforge bench ecar`` measures the FLOPs/latency
claim.
"""

from tokenforge.methods import lazy_exports

# loaded on first use, so listing methods (``method.py``) does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    "DiffLoss": "diffloss", "SimpleMLPAdaLN": "diffloss", "FlowDiT": "dit", "MAR": "mar", "ECAR": "model"
})

__all__ = ["ECAR", "FlowDiT", "MAR", "DiffLoss", "SimpleMLPAdaLN"]
