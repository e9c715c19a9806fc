"""3DShape2VecSet (VAT's public encoder peer): official checkpoint loader and the ``shape2vecset`` parity check.

``from_official("shape2vecset", path, config)``: a fixture folder (``config.json`` + ``state_dict.safetensors``)
or a released ``checkpoint-<epoch>.pth`` (``{'model': state_dict, ...}``; weights_only load) / ``.safetensors``.
Config keys are the official constructor names (depth, dim, num_inputs, num_latents, latent_dim, heads,
dim_head, point_embed_hidden_dim); without a config, ``config.json`` beside the file is read, else
``kl_d512_m512_l8`` defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tokenforge.hub import (load_mapped_state_dict, read_config_file, read_state_dict, register_official)
from tokenforge.parity import Result, load_inputs, register_parity
from tokenforge.tokenizers.vat.shape2vecset import Shape2VecSet, official_key_map

WEIGHTS_FILE = "state_dict.safetensors"
FLOAT_TOL = 1e-5  # fixture README: float32 CPU
DEFAULTS = {"depth": 24, "dim": 512, "num_inputs": 2048, "num_latents": 512, "latent_dim": 8, "heads": 8,
            "dim_head": 64, "point_embed_hidden_dim": 48}


def model_from_config(config: Mapping[str, Any]) -> Shape2VecSet:
    cfg = {**DEFAULTS, **{k: config[k] for k in DEFAULTS if k in config}}
    if config.get("queries_dim", cfg["dim"]) != cfg["dim"] or config.get("output_dim", 1) != 1:
        raise ValueError("only queries_dim == dim and output_dim == 1 (the released KLAutoEncoder) are supported")
    if config.get("decoder_ff") or config.get("weight_tie_layers"):
        raise ValueError("decoder_ff / weight_tie_layers variants are not supported (the released models use neither)")
    return Shape2VecSet(**{k: int(v) for k, v in cfg.items()})


def load_shape2vecset(
    path: Path, config: Mapping[str, Any] | None = None, *, trust_pickle: bool = False
) -> Shape2VecSet:
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found (a 3DShape2VecSet state dict or checkpoint-<epoch>.pth)")
    state = read_state_dict(weights, nested=("model",), trust_pickle=trust_pickle)  # the file first: a bad one fails before the model is built
    if config is None:
        config_file = weights.parent / "config.json"
        config = read_config_file(config_file) if config_file.is_file() else {}
    model = model_from_config(config)
    load_mapped_state_dict(model, state, official_key_map, source=str(weights))
    return model.eval()


register_official("shape2vecset", load_shape2vecset)


@torch.no_grad()
def shape2vecset_parity(folder: Path) -> dict[str, Result]:
    model = load_shape2vecset(folder)
    inputs = load_inputs(folder)
    pc, queries, eps = inputs["surface_pc"], inputs["queries"], inputs["eps"]
    enc = model.encode_full(pc)
    post = enc.posterior
    sample = post.sample(eps)
    tol = FLOAT_TOL
    return {
        "fps_idx": Result(enc.fps_idx, 0.0),
        "sampled_pc": Result(enc.sampled_pc, tol),
        "pc_embed": Result(enc.pc_embed, tol),
        "encoder_tokens": Result(enc.tokens, tol),
        "mean": Result(post.mean, tol),
        "logvar": Result(post.logvar, tol),
        "latent_sample": Result(sample, tol),
        "kl": Result(post.kl(), tol),
        "logits_from_sample": Result(model.decode(sample, queries), tol),
        "logits_from_mean": Result(model.decode(post.mean, queries), tol),
    }


register_parity("shape2vecset", shape2vecset_parity)
