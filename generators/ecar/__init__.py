"""E-CAR (continuous multistage AR with a multistage flow head), its DiT baseline and its public peer MAR.

``ECAR`` (model.py) generates latents stage by stage; ``FlowDiT`` (dit.py) is the matched DiT baseline with the
same flow objective; ``MAR`` / ``DiffLoss`` (mar.py, diffloss.py, diffusion.py) reproduce MAR's official code
(``from_official("mar", path)``, parity fixture ``mar``); ``ECARModule`` (module.py) trains any of them on latent
token shards; ``tokenforge ecar-generate`` samples, ``tokenforge bench ecar`` measures the FLOPs/latency claim.
"""

from tokenforge.generators.ecar.diffloss import DiffLoss, SimpleMLPAdaLN
from tokenforge.generators.ecar.dit import FlowDiT
from tokenforge.generators.ecar.mar import MAR
from tokenforge.generators.ecar.model import ECAR

__all__ = ["ECAR", "FlowDiT", "MAR", "DiffLoss", "SimpleMLPAdaLN"]
