"""Official VQGAN-family checkpoints -> `VQGAN`: LlamaGen's VQ (``llamagen_vq``) and VAR's VQVAE (``var_vqvae``).

Both releases use the same encoder/decoder, in two key layouts:
- LlamaGen (``vq_ds16_c2i.pt``: ``{"model": state}``, FSDP exports a bare state): our own layout
  (``conv_blocks.{i}.res.{j}``, ``mid.{0,1,2}``), only ``quantize.`` -> ``quantizer.``; the usage buffer
  ``quantize.codebook_used`` is dropped.
- VAR (``vae_ch160v4096z32.pth``, a plain state dict; or a fixture folder with ``vae_state_dict.safetensors``
  and ``config.json``): taming names (``down.{i}.block.{j}``, ``mid.block_1/attn_1/block_2``, decoder
  ``up.{i}`` indexed by resolution level, i.e. stored in reverse of execution order) and fused ``attn.qkv``
  convs, which are split into q/k/v. 3x3 quant convs.

Architecture sizes (ch, ch_mult, res blocks, z_channels, attention flags, code dim) are read off the weights;
``config`` only has to give what the weights cannot (VAR's scales and Phi settings, LlamaGen's l2-norm and
beta), and may override anything. `to_llamagen_state` / `to_var_state` are the inverse maps (tests, export).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tokenforge.hub import (CheckpointError, count_indexed, load_mapped_state_dict, read_config_file,
                            read_state_dict, register_official, without_trust_keys)
from tokenforge.nn.conv2d import split_fused_qkv
from tokenforge.parity import Result, load_inputs
from tokenforge.tokenizers.quantizers.var_release import (FLOAT_TOL, VAR_RELEASE_VQVAE, WEIGHTS_FILE,
                                                          quantizer_from_config, read_state)
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.vqgan.model import VQGAN

# ----------------------------------------------------------------------------- architecture from weights


def vqgan_architecture(state: Mapping[str, Tensor], enc_level: str, enc_res: str, mid_attn: str, dec_res: str) -> dict[str, Any]:
    """VQGAN init args that the weights determine. ``enc_level`` is e.g. ``encoder.down`` (prefix of the level
    list), ``enc_res`` the res-block list name inside a level, ``dec_res`` the res-block list of one decoder level."""
    if "encoder.conv_in.weight" not in state or "quant_conv.weight" not in state:
        raise CheckpointError("state dict has no encoder.conv_in.weight / quant_conv.weight: not a VQGAN checkpoint")
    ch = state["encoder.conv_in.weight"].shape[0]
    levels = count_indexed(state, enc_level)
    if levels == 0:
        raise CheckpointError(f"state dict has no {enc_level}.* keys")
    ch_mult = [state[f"{enc_level}.{lv}.{enc_res}.0.conv1.weight"].shape[0] // ch for lv in range(levels)]
    num_res_blocks = count_indexed(state, f"{enc_level}.{levels - 1}.{enc_res}")
    dec_blocks = count_indexed(state, dec_res) - 1
    dec_ch = state["decoder.conv_out.weight"].shape[1] // ch_mult[0]
    return {
        "ch": ch,
        "ch_mult": ch_mult,
        "num_res_blocks": num_res_blocks,
        "z_channels": state["encoder.conv_out.weight"].shape[0],
        "in_channels": state["encoder.conv_in.weight"].shape[1],
        "attn_last_level": count_indexed(state, f"{enc_level}.{levels - 1}.attn") > 0,
        "attn_mid": mid_attn in state,
        "quant_conv_kernel": state["quant_conv.weight"].shape[-1],
        "decoder_ch": dec_ch if dec_ch != ch else None,
        "decoder_num_res_blocks": dec_blocks if dec_blocks != num_res_blocks else None,
    }


# ----------------------------------------------------------------------------- LlamaGen

LLAMAGEN_DEFAULTS: dict[str, Any] = {"l2_normalize": True, "beta": 0.25, "dropout": 0.0}


def llamagen_key_map(key: str) -> str | None:
    """LlamaGen VQModel key -> ours (``quantize.codebook_used``, a usage window, is dropped)."""
    if key == "quantize.codebook_used":
        return None
    return "quantizer." + key[len("quantize."):] if key.startswith("quantize.") else key


def to_llamagen_state(model: VQGAN) -> dict[str, Tensor]:
    """Our `VQGAN` (with a `VectorQuantizer`) state -> LlamaGen's ``VQModel`` key layout."""
    return {("quantize." + k[len("quantizer."):] if k.startswith("quantizer.") else k): v.clone()
            for k, v in model.state_dict().items()}


def load_llamagen_vq(path: Path, config: Mapping[str, Any] | None = None, *, trust_pickle: bool = False) -> VQGAN:
    """Loader for ``llamagen_vq``: a LlamaGen VQ file (``{"model": state}`` or a bare state dict).

    Files that also pickle training ``args`` are refused by ``torch.load(weights_only=True)``; the caller passes
    ``trust_pickle=True`` (``--trust-pickle``) for a file whose origin they trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no LlamaGen VQ checkpoint at {path} (expected e.g. vq_ds16_c2i.pt)")
    config = {**LLAMAGEN_DEFAULTS, **without_trust_keys(config or {})}
    state = read_state_dict(path, nested=("model",), trust_pickle=trust_pickle)
    if "quantize.embedding.weight" not in state:
        raise CheckpointError(f"{path} holds no LlamaGen VQModel state (no 'model' dict with quantize.embedding.weight)")
    arch = vqgan_architecture(state, "encoder.conv_blocks", "res", "encoder.mid.1.q.weight", "decoder.conv_blocks.0.res")
    codes, dim = state["quantize.embedding.weight"].shape
    quantizer = VectorQuantizer(int(config.pop("codebook_size", codes)), int(config.pop("codebook_embed_dim", dim)),
                                l2_normalize=bool(config.pop("l2_normalize")), beta=float(config.pop("beta")))
    model = VQGAN(quantizer, **{**arch, **config})
    load_mapped_state_dict(model, state, llamagen_key_map, source=str(path))
    return model.eval()


# ----------------------------------------------------------------------------- VAR

_VAR_RULES = [
    (r"^(encoder|decoder)\.mid\.block_1\.", r"\1.mid.0."),
    (r"^(encoder|decoder)\.mid\.attn_1\.", r"\1.mid.1."),
    (r"^(encoder|decoder)\.mid\.block_2\.", r"\1.mid.2."),
    (r"^encoder\.down\.(\d+)\.block\.", r"encoder.conv_blocks.\1.res."),
    (r"^encoder\.down\.(\d+)\.", r"encoder.conv_blocks.\1."),
    (r"^quantize\.", "quantizer."),
]


def var_key_map(num_levels: int):
    """VAR key -> ours; decoder ``up.{i}`` (resolution level i) becomes ``conv_blocks.{L-1-i}`` (execution order)."""
    rules = [(re.compile(p), r) for p, r in _VAR_RULES]

    def key_map(key: str) -> str:
        for pattern, replacement in rules:
            key = pattern.sub(replacement, key)
        m = re.match(r"^decoder\.up\.(\d+)\.(block|attn|upsample)\.(.*)$", key)
        if m:
            part = "res" if m.group(2) == "block" else m.group(2)
            key = f"decoder.conv_blocks.{num_levels - 1 - int(m.group(1))}.{part}.{m.group(3)}"
        return key

    return key_map


def to_var_state(model: VQGAN) -> dict[str, Tensor]:
    """Our `VQGAN` state -> VAR's ``VQVAE`` key layout (fused qkv, taming names)."""
    levels = len(model.encoder.conv_blocks)
    out: dict[str, Tensor] = {}
    state = model.state_dict()
    for key, value in state.items():
        k = re.sub(r"^(encoder|decoder)\.mid\.0\.", r"\1.mid.block_1.", key)
        k = re.sub(r"^(encoder|decoder)\.mid\.1\.", r"\1.mid.attn_1.", k)
        k = re.sub(r"^(encoder|decoder)\.mid\.2\.", r"\1.mid.block_2.", k)
        k = re.sub(r"^encoder\.conv_blocks\.(\d+)\.res\.", r"encoder.down.\1.block.", k)
        k = re.sub(r"^encoder\.conv_blocks\.", "encoder.down.", k)
        m = re.match(r"^decoder\.conv_blocks\.(\d+)\.(res|attn|upsample)\.(.*)$", k)
        if m:
            part = "block" if m.group(2) == "res" else m.group(2)
            k = f"decoder.up.{levels - 1 - int(m.group(1))}.{part}.{m.group(3)}"
        k = re.sub(r"^quantizer\.", "quantize.", k)
        m = re.match(r"^(.*)\.([qkv])\.(weight|bias)$", k)
        if m and m.group(2) == "q":  # fuse q, k, v (stacked on dim 0) into one qkv conv
            base, kind = key[: -len(f".q.{m.group(3)}")], m.group(3)
            k = f"{m.group(1)}.qkv.{kind}"
            value = torch.cat([state[f"{base}.{n}.{kind}"] for n in "qkv"], dim=0)
        elif m:
            continue
        out[k] = value.clone()
    return out


def _var_sources(path: Path) -> tuple[Path, Path | None]:
    if path.is_dir():
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{path} has no {WEIGHTS_FILE}; pass the VQVAE state-dict file or a fixture folder")
        return weights, path / "config.json"
    if path.is_file():
        return path, path.parent / "config.json"
    raise FileNotFoundError(f"no VAR VQVAE checkpoint at {path} (expected vae_ch160v4096z32.pth or a fixture folder)")


def load_var_vqvae(path: Path, config: Mapping[str, Any] | None = None, *, trust_pickle: bool = False) -> VQGAN:
    """Loader for ``var_vqvae``: VAR's VQVAE as a `VQGAN` with a `MultiScaleResidualQuantizer`."""
    weights, config_file = _var_sources(Path(path))
    if config is None:
        config = read_config_file(config_file) if config_file and config_file.is_file() else VAR_RELEASE_VQVAE
    vq_config = dict(config.get("vqvae", config))
    state = split_fused_qkv(read_state(weights, trust_pickle))
    if not any(k.startswith("encoder.down.") for k in state):
        raise CheckpointError(f"{weights} has no encoder.down.* keys: not a VAR VQVAE state dict")
    arch = vqgan_architecture(state, "encoder.down", "block", "encoder.mid.attn_1.q.weight", "decoder.up.0.block")
    vq_config.setdefault("vocab_size", state["quantize.embedding.weight"].shape[0])
    vq_config.setdefault("z_channels", state["quantize.embedding.weight"].shape[1])
    vq_config.setdefault("v_patch_nums", VAR_RELEASE_VQVAE["v_patch_nums"])
    model = VQGAN(quantizer_from_config(vq_config), dropout=float(vq_config.get("dropout", 0.0)), **arch)
    load_mapped_state_dict(model, state, var_key_map(len(arch["ch_mult"])), source=str(weights))
    return model.eval()


@torch.no_grad()
def var_vqvae_parity(folder: Path) -> dict[str, Result]:
    """The VQVAE outputs of a ``var_msrq`` fixture (encoder, decoder, image round trip), for its parity check.

    The quantizer outputs come from `tokenforge.tokenizers.quantizers.official_var.var_msrq_parity`; merge both
    dicts to cover the fixture's encoder/quantizer/decoder outputs.
    """
    model = load_var_vqvae(Path(folder))
    img = load_inputs(Path(folder))["img"]
    f = model.features(img)
    tokens = model.encode(img)
    fhat = model.quantizer.decode(tokens.ids)
    return {
        "f_BChw": Result(f, FLOAT_TOL),
        "dec_unclamped": Result(model.decode_latents(fhat), FLOAT_TOL),
        "rec_img": Result(model.decode_latents(model.quantizer.encode_fhat(f)[-1]).clamp(-1, 1), FLOAT_TOL),
        "rec_img_from_idx": Result(model.decode(tokens), FLOAT_TOL),
    }


register_official("llamagen_vq", load_llamagen_vq)
register_official("var_vqvae", load_var_vqvae)
