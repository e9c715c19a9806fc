"""VAR's released VQVAE, as both of its loaders read it: the quantizer settings of ``vae_ch160v4096z32.pth``, the
fixture's weights file, reading a state dict, and building the multi-scale quantizer from VAR's argument names.

Shared by the quantizer loader (`tokenforge.tokenizers.quantizers.official_var`, ``var_msrq``) and the VQVAE loader
(`tokenforge.tokenizers.vqgan.official`, ``var_vqvae``), so neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tokenforge.hub import read_state_dict
from tokenforge.tokenizers.quantizers.residual import MultiScaleResidualQuantizer

# quantizer settings of the released vae_ch160v4096z32.pth (VAR models/vqvae.py + build_vae_var defaults)
VAR_RELEASE_VQVAE: dict[str, Any] = {
    "vocab_size": 4096,
    "z_channels": 32,
    "beta": 0.25,
    "using_znorm": False,
    "quant_resi": 0.5,
    "share_quant_resi": 4,
    "default_qresi_counts": 0,
    "v_patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
}
WEIGHTS_FILE = "vae_state_dict.safetensors"
FLOAT_TOL = 1e-5  # fixture README: encoder/quantizer/decoder float32 CPU


def quantizer_from_config(config: Mapping[str, Any]) -> MultiScaleResidualQuantizer:
    """Build the quantizer from VAR's VQVAE argument names (a ``vqvae`` block or the whole fixture config)."""
    cfg = dict(config.get("vqvae", config))
    missing = [k for k in ("vocab_size", "z_channels", "v_patch_nums") if k not in cfg]
    if missing:
        raise CheckpointError(f"VAR vqvae config lacks {missing}; give vocab_size, z_channels and v_patch_nums")
    return MultiScaleResidualQuantizer(
        codebook_size=int(cfg["vocab_size"]),
        dim=int(cfg["z_channels"]),
        scales=[int(p) for p in cfg["v_patch_nums"]],
        spatial_dims=2,
        beta=float(cfg.get("beta", 0.25)),
        using_znorm=bool(cfg.get("using_znorm", False)),
        quant_resi=float(cfg.get("quant_resi", 0.5)),
        share_quant_resi=int(cfg.get("share_quant_resi", 4)),
        default_qresi_counts=int(cfg.get("default_qresi_counts", 0)),
    )


def read_state(path: Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in a ``.safetensors`` file or a torch checkpoint (`CheckpointError` if it holds none)."""
    return read_state_dict(path, nested=(), trust_pickle=trust_pickle)
