"""Official TokenFlow checkpoints -> `TokenFlow` (``from_official("tokenflow", path, config)``), and parity.

Reading: a ``.pt`` container (``ema`` if present, else ``model``, else ``state_dict``, else the dict itself, as
the official loaders), a ``.safetensors`` state dict, or a fixture folder (``checkpoint.pt`` or
``state_dict.safetensors`` + ``config.json`` with the official ``ModelArgs`` fields and ``_size_overrides``).
Training checkpoints also pickle ``args`` (an ``argparse.Namespace``), which ``torch.load(weights_only=True)``
refuses; such a file is loaded only when the caller passes ``trust_pickle=True`` (``from_official(..., trust_pickle=
True)``, ``tokenforge convert --trust-pickle``), because unpickling can run arbitrary code; a ``trust_pickle`` key
in a config or a folder's ``config.json`` is ignored. Even then ``argparse.Namespace`` is first allowlisted in the
safe loader, so a file holding nothing worse never runs the full unpickler.

Architecture is read off the weights (tower kind and sizes, pixel encoder/decoder incl. the enhanced decoder,
codebook sizes); ``config`` supplies what weights cannot: attention head counts (defaults: CLIP width/64,
SigLIP width/72, BEiT decoder 12), the scales (default: the released lists, CLIP at ``image_size`` 256 with
``infer_interpolate``) and the SigLIP output resize (384). SigLIP keys are accepted with or without the
transformers-4.4x ``vision_model.`` level. The vitamin teacher (timm) is not supported.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tokenforge.hub import (CheckpointError, count_indexed, load_mapped_state_dict, read_config_file,
                            read_state_dict, register_official, without_trust_keys)
from tokenforge.parity import Result, load_inputs, register_parity
from tokenforge.tokenizers.tokenflow.model import TokenFlow
from tokenforge.tokenizers.tokenflow.quantizer import DualCodebookQuantizer
from tokenforge.tokenizers.tokenflow.semantic import SemanticDecoder
from tokenforge.tokenizers.tokenflow.towers import CLIPVisionTower, SiglipVisionTower
from tokenforge.tokenizers.vqgan.official import vqgan_architecture

SIGLIP_SCALES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 22, 27]
CLIP_SCALES = {224: [1, 2, 4, 6, 8, 10, 12, 14], 256: [1, 2, 4, 6, 8, 10, 12, 14, 16]}

_COMMON_RULES = [
    (r"^quantize\.embedding_vqkd\.", "quantizer.semantic_embedding."),
    (r"^quantize\.embedding_vqgan\.", "quantizer.pixel_embedding."),
    (r"^quantize\.", "quantizer."),
    (r"^decoder_vqkd\.patch_embed\.proj\.", "semantic_decoder.patch_embed."),
    (r"^decoder_vqkd\.", "semantic_decoder."),
]
_CLIP_RULES = [
    (r"^encoder_vqkd\.transformer\.resblocks\.(\d+)\.", r"semantic_encoder.blocks.\1."),
    (r"^(semantic_encoder\.blocks\.\d+\.)ln_1\.", r"\1norm1."),
    (r"^(semantic_encoder\.blocks\.\d+\.)ln_2\.", r"\1norm2."),
    (r"^(semantic_encoder\.blocks\.\d+\.attn\.)in_proj_(weight|bias)$", r"\1qkv.\2"),
    (r"^(semantic_encoder\.blocks\.\d+\.attn\.)out_proj\.", r"\1proj."),
    (r"^(semantic_encoder\.blocks\.\d+\.mlp\.)c_fc\.", r"\1fc1."),
    (r"^(semantic_encoder\.blocks\.\d+\.mlp\.)c_proj\.", r"\1fc2."),
    (r"^encoder_vqkd\.", "semantic_encoder."),
]
_SIGLIP_RULES = [
    (r"^encoder_vqkd\.(vision_model\.)?", "semantic_encoder."),
    (r"^semantic_encoder\.embeddings\.patch_embedding\.", "semantic_encoder.patch_embedding."),
    (r"^semantic_encoder\.embeddings\.position_embedding\.weight$", "semantic_encoder.position_embedding"),
    (r"^semantic_encoder\.encoder\.layers\.(\d+)\.", r"semantic_encoder.blocks.\1."),
    (r"^(semantic_encoder\.blocks\.\d+\.)layer_norm1\.", r"\1norm1."),
    (r"^(semantic_encoder\.blocks\.\d+\.)layer_norm2\.", r"\1norm2."),
    (r"^(semantic_encoder\.blocks\.\d+\.)self_attn\.([qkv])_proj\.", r"\1attn.\2."),
    (r"^(semantic_encoder\.blocks\.\d+\.)self_attn\.out_proj\.", r"\1attn.proj."),
]


def tower_kind(state: Mapping[str, Tensor]) -> str:
    if "encoder_vqkd.class_embedding" in state:
        return "clip"
    if any(re.match(r"^encoder_vqkd\.(vision_model\.)?embeddings\.patch_embedding\.weight$", k) for k in state):
        return "siglip"
    if any(k.startswith("encoder_vqkd.") for k in state):
        raise CheckpointError("encoder_vqkd is neither an OpenAI CLIP nor a SigLIP tower (the vitamin/timm teacher "
                              "is not supported by tokenforge)")
    raise CheckpointError("no encoder_vqkd.* keys: not a TokenFlow tokenizer state dict")


def key_map(kind: str):
    rules = [(re.compile(p), r) for p, r in (_CLIP_RULES if kind == "clip" else _SIGLIP_RULES) + _COMMON_RULES]

    def apply(key: str) -> str:
        for pattern, replacement in rules:
            key = pattern.sub(replacement, key)
        return key

    return apply


# ----------------------------------------------------------------------------- reading files


def read_official_state(path: Path, trust_pickle: bool = False) -> dict[str, Tensor]:
    """The tokenizer's state dict from a file (``ema`` -> ``model`` -> ``state_dict`` -> the dict itself)."""
    return read_state_dict(path, nested=("ema", "model", "state_dict"), trust_pickle=trust_pickle,
                           trusted_globals=(argparse.Namespace,))


def _sources(path: Path) -> tuple[Path, Path | None]:
    if path.is_dir():
        for name in ("checkpoint.pt", "state_dict.safetensors"):
            if (path / name).is_file():
                return path / name, path / "config.json"
        raise FileNotFoundError(f"{path} has neither checkpoint.pt nor state_dict.safetensors")
    if path.is_file():
        return path, None
    raise FileNotFoundError(f"no TokenFlow checkpoint at {path} (expected e.g. tokenflow_clipb_32k_enhanced.pt)")


# ----------------------------------------------------------------------------- architecture from weights


def _side(rows: int, what: str) -> int:
    side = math.isqrt(rows)
    if side * side != rows:
        raise CheckpointError(f"{what} has {rows} rows, not a square grid")
    return side


def build_from_state(state: Mapping[str, Tensor], config: Mapping[str, Any]) -> TokenFlow:
    """A `TokenFlow` whose shapes fit ``state`` (official keys); ``config``: ModelArgs + ``_size_overrides``."""
    over = dict(config.get("_size_overrides", {}))
    get = lambda name, default=None: config.get(name, over.get(name, default))  # noqa: E731
    kind = tower_kind(state)
    if kind == "clip":
        width = state["encoder_vqkd.class_embedding"].shape[0]
        patch = state["encoder_vqkd.conv1.weight"].shape[-1]
        grid = _side(state["encoder_vqkd.positional_embedding"].shape[0] - 1, "CLIP positional_embedding")
        proj = state.get("encoder_vqkd.proj")
        tower = CLIPVisionTower(grid * patch, patch, width, count_indexed(state, "encoder_vqkd.transformer.resblocks"),
                                get("clip_heads", width // 64), proj.shape[1] if proj is not None else None)
        scaling = None
    else:
        norm = next(k for k in state if k.endswith("embeddings.patch_embedding.weight"))
        prefix = norm[: -len("embeddings.patch_embedding.weight")]
        hf = dict(over.get("siglip_vision_config", {}))
        width, patch = state[norm].shape[0], state[norm].shape[-1]
        grid = _side(state[prefix + "embeddings.position_embedding.weight"].shape[0], "SigLIP position_embedding")
        tower = SiglipVisionTower(
            grid * patch, patch, width, count_indexed(state, prefix + "encoder.layers"),
            hf.get("num_attention_heads", get("siglip_heads", max(1, width // 72))),
            state[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0], hf.get("layer_norm_eps", 1e-6),
            use_head=any(k.startswith(prefix + "head.") for k in state),
        )
        scaling = "siglip" if "scaling_layer.shift" in state else None
    vqkd = dict(over.get("vqkd_decoder", {}))
    pos = state["decoder_vqkd.pos_embed"]
    decoder = SemanticDecoder(
        in_chans=state["decoder_vqkd.patch_embed.proj.weight"].shape[1], embed_dim=pos.shape[-1],
        depth=count_indexed(state, "decoder_vqkd.blocks"), num_heads=int(vqkd.get("num_heads", get("vqkd_decoder_heads", 12))),
        img_size=_side(pos.shape[1] - 1, "decoder_vqkd.pos_embed"),
        mlp_ratio=state["decoder_vqkd.blocks.0.mlp.fc1.weight"].shape[0] / pos.shape[-1],
    )
    scales = get("scale_rq_layers")
    if scales is None:
        scales = SIGLIP_SCALES if kind == "siglip" else CLIP_SCALES.get(int(get("image_size", 256)))
        if scales is None:
            raise CheckpointError(f"no released scale list for a CLIP tokenizer at {get('image_size')} px; pass "
                                  "config={'scale_rq_layers': [...]}")
    codes, sem_dim = state["quantize.embedding_vqkd.weight"].shape
    used = state.get("quantize.codebook_used")
    quantizer = DualCodebookQuantizer(
        codes, sem_dim, state["quantize.embedding_vqgan.weight"].shape[1], scales,
        beta=float(get("commit_loss_beta", 0.25)), entropy_loss_ratio=float(get("entropy_loss_ratio", 0.0)),
        usage_window=used.numel() if used is not None else 131072,
    )
    arch = vqgan_architecture(state, "encoder.conv_blocks", "res", "encoder.mid.1.q.weight", "decoder.conv_blocks.0.res")
    if not (arch.pop("attn_last_level") and arch.pop("attn_mid")) or arch.pop("quant_conv_kernel") != 1:
        raise CheckpointError("pixel branch lacks the attention blocks or 1x1 quant convs of TokenFlow's VQGAN")
    arch.pop("in_channels")
    output = get("final_pixel_resize", 384 if kind == "siglip" else None)
    return TokenFlow(tower, quantizer, decoder, state["decode_task_layer.2.weight"].shape[0], scaling,
                     dropout=float(get("dropout_p", 0.0)), pixel_output_size=output, **arch)


def load_tokenflow(path: Path, config: Mapping[str, Any] | None = None, *, trust_pickle: bool = False) -> TokenFlow:
    """Loader registered as ``tokenflow`` (see the module docstring); trust comes from ``trust_pickle`` only."""
    weights, config_file = _sources(Path(path))
    saved = read_config_file(config_file) if config_file is not None and config_file.is_file() else {}
    config = {**saved, **without_trust_keys(config or {})}
    state = read_official_state(weights, trust_pickle)
    model = build_from_state(state, config)
    load_mapped_state_dict(model, state, key_map(tower_kind(state)), source=str(weights),
                           ignore_missing=[r"^semantic_decoder\.blocks\.\d+\.attn\.zero_k_bias$"])
    return model.eval()


# ----------------------------------------------------------------------------- parity


@torch.no_grad()
def parity(folder: Path) -> dict[str, Result]:
    """Recompute every stage of a ``shared/fixtures/tokenflow*`` folder (tolerances from its README)."""
    model = load_tokenflow(folder)
    x = load_inputs(folder)["image"]
    tokens = model.semantic_tokens(x)
    h, sem, pix = model.features(x)
    quant, ids = model.quantizer.quantize_all(h)
    indices = torch.cat(ids, dim=1)
    sem_recon, pix_recon = model.decode_quant(quant)
    sem_code, pix_code = model.decode_code(indices)
    tower = "clip_patch_tokens" if isinstance(model.semantic_encoder, CLIPVisionTower) else "siglip_hidden_m2"
    return {
        tower: Result(tokens, 1e-5 if tower == "clip_patch_tokens" else 2e-5),
        "sem_feat": Result(sem, 1e-5), "pix_feat": Result(pix, 1e-5), "quant": Result(quant, 1e-5),
        "indices": Result(indices, 0), "sem_recon": Result(sem_recon, 1e-5), "pix_recon": Result(pix_recon, 1e-4),
        "sem_recon_from_code": Result(sem_code, 1e-5), "pix_recon_from_code": Result(pix_code, 1e-4),
        "next_scale_inputs": Result(model.quantizer.next_scale_inputs(ids), 1e-5),
    }


register_official("tokenflow", load_tokenflow)
register_parity("tokenflow", parity)
register_parity("tokenflow_siglip", parity)
