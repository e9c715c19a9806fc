"""Official VAR multi-scale quantizer: load ``quantize.*`` from a VQVAE checkpoint, and its parity check.

``from_official("var_msrq", path, config)`` accepts a fixture-style folder (``config.json`` with a ``vqvae``
block + ``vae_state_dict.safetensors``) or a checkpoint file (``.safetensors`` or the released plain-state-dict
``vae_ch160v4096z32.pth``). Without a config, a ``config.json`` beside the file is used, else the released
VQVAE's quantizer settings (`VAR_RELEASE_VQVAE`). Only the ``quantize.*`` keys are read; the conv encoder and
decoder belong to the VQVAE loader (``var_vqvae``).

The parity function feeds the fixture's stored ``f_BChw`` (the encoder output) to the quantizer and recomputes
the per-scale indices, cumulative f_hat, the training-forward output and loss, and the teacher-forcing input;
the VQVAE loader (``var_vqvae``) adds the encoder/decoder outputs recomputed from the stored image.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from tokenforge.hub import CheckpointError, load_mapped_state_dict, read_config_file, register_official
from tokenforge.parity import Result, register_parity
from tokenforge.tokenizers.quantizers.residual import MultiScaleResidualQuantizer
from tokenforge.tokenizers.quantizers.var_release import (FLOAT_TOL, VAR_RELEASE_VQVAE, WEIGHTS_FILE,
                                                          quantizer_from_config, read_state)
from tokenforge.tokenizers.vqgan.official import var_vqvae_parity

PREFIX = "quantize."


def load_var_msrq(
    path: Path, config: Mapping[str, Any] | None = None, *, trust_pickle: bool = False
) -> MultiScaleResidualQuantizer:
    """Loader registered as ``var_msrq``: a `MultiScaleResidualQuantizer` holding the checkpoint's ``quantize.*``."""
    path = Path(path)
    if path.is_dir():
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{path} has no {WEIGHTS_FILE} (the VAR VQVAE state dict with quantize.* keys)")
        config_file = path / "config.json"
    elif path.is_file():
        weights, config_file = path, path.parent / "config.json"
    else:
        raise FileNotFoundError(f"no VAR VQVAE checkpoint at {path}")
    state = read_state(weights, trust_pickle)  # the file first: a bad one fails before anything is built
    if config is None:
        config = read_config_file(config_file) if config_file.is_file() else VAR_RELEASE_VQVAE
    quantizer = quantizer_from_config(config)
    if not any(k.startswith(PREFIX) for k in state):
        raise CheckpointError(f"{weights} has no '{PREFIX}*' keys; it is not a VAR VQVAE state dict")
    load_mapped_state_dict(
        quantizer, state, lambda k: k[len(PREFIX):] if k.startswith(PREFIX) else None, source=str(weights)
    )
    return quantizer.eval()


@torch.no_grad()
def var_msrq_parity(folder: Path) -> dict[str, Result]:
    """Recompute the quantizer outputs of a ``var_msrq`` fixture from its stored ``f_BChw``."""
    folder = Path(folder)
    quantizer = load_var_msrq(folder)
    f = load_file(str(folder / "outputs.safetensors"))["f_BChw"]
    indices = quantizer.encode(f)
    fhats = quantizer.encode_fhat(f)
    out = quantizer(f)
    results = {f"idx_Bl_{s}": Result(idx, 0) for s, idx in enumerate(indices)}
    results.update({f"fhat_{s}": Result(fhat, FLOAT_TOL) for s, fhat in enumerate(fhats)})
    results["qforward_fhat"] = Result(out.quantized, FLOAT_TOL)
    results["qforward_vq_loss"] = Result(out.loss.reshape(1), FLOAT_TOL)
    results["var_input_BLCv"] = Result(quantizer.idx_to_var_input(indices), FLOAT_TOL)
    # the conv VQVAE around the quantizer (when the folder holds it): encoder/decoder outputs, image round trips
    if any(key.startswith("encoder.down.") for key in read_state(folder / WEIGHTS_FILE)):
        results.update(var_vqvae_parity(folder))
    # the VAR transformer outputs (when the folder holds its weights)
    if (folder / "var_state_dict.safetensors").is_file():
        from tokenforge.generators.autoregressive.official import var_transformer_parity

        results.update(var_transformer_parity(folder))
    return results


register_official("var_msrq", load_var_msrq)
register_parity("var_msrq", var_msrq_parity)
