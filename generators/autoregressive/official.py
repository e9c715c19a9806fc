"""Official LlamaGen GPT and VAR transformer checkpoints -> `GPT` / `VAR`, and their parity checks.

``from_official("llamagen", path, config)``: a released ``c2i_*.pt`` / ``t2i_*.pt`` (``{"model": state}``; FSDP
exports are bare states) or a fixture folder (``config.json`` with LlamaGen ``ModelArgs`` names and
``state_dict.safetensors`` or ``checkpoint.pt``). Sizes come from the weights (dim, depth, vocab, classes,
caption width, SwiGLU width); the head count from ``config["n_head"]`` or LlamaGen's ``GPT_models`` table by
width; the token grid from ``config["block_size"]``, else an ``_<size>`` suffix in the file name (/16), else 256.

``from_official("var", path, config)``: a released ``var_d*.pth`` (plain state dict) or a fixture folder
(``config.json`` with a ``var`` block, ``var_state_dict.safetensors``); depth from the weights, the rest from
the config or VAR's ``build_vae_var`` defaults. The persistent buffers ``lvl_1L`` / ``attn_bias_for_masking``
are recomputed (checked equal to the file's in the parity test), not loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.generators.sampling import guide, logits_to_probs
from tokenforge.generators.autoregressive.var import VAR
from tokenforge.hub import (CheckpointError, count_indexed, load_mapped_state_dict, read_config_file, read_state_dict,
                            register_official, without_trust_keys)
from tokenforge.nn.mlp import swiglu_hidden_dim
from tokenforge.parity import Result, load_inputs, register_parity

# LlamaGen GPT_models: width -> heads
LLAMAGEN_HEADS = {768: 12, 1024: 16, 1280: 20, 1536: 24, 2560: 40, 2048: 32, 3200: 32, 4096: 32}

LLAMAGEN_KEYS = [
    (r"^cls_embedding\.embedding_table\.", "cls_embedding."),
    (r"^cls_embedding\.(cap_proj|uncond_embedding)", r"caption_embedding.\1"),
    (r"^layers\.", "transformer.blocks."),
    (r"\.attention\.wqkv\.", ".attn.qkv."),
    (r"\.attention\.wo\.", ".attn.proj."),
    (r"\.feed_forward\.", ".mlp."),
    (r"\.attention_norm\.", ".norm1."),
    (r"\.ffn_norm\.", ".norm2."),
    (r"^norm\.", "transformer.norm."),
]
LLAMAGEN_DROP = re.compile(r"(^freqs_cis$|^causal_mask$|kv_cache\.)")

VAR_KEYS = [
    (r"^head_nm\.ada_lin\.1\.", "head_ada.linear."),
    (r"^blocks\.", "transformer.blocks."),
    (r"\.attn\.mat_qkv\.", ".attn.qkv."),
    (r"\.attn\.scale_mul_1H11$", ".attn.scale_mul"),
    (r"\.ffn\.", ".mlp."),
    (r"\.ada_lin\.1\.", ".adaln.linear."),
]


def _sources(path: Path, names: tuple[str, ...]) -> tuple[Path, dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        weights = next((path / n for n in names if (path / n).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{path} holds none of {', '.join(names)}")
        config_file = path / "config.json"
        return weights, read_config_file(config_file) if config_file.is_file() else {}
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path, {}


# ----------------------------------------------------------------------------- LlamaGen


def llamagen_config(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], name: str = "") -> dict[str, Any]:
    """`GPT` init args for an official LlamaGen state dict (see the module docstring for what comes from where)."""
    if "tok_embeddings.weight" not in state:
        raise CheckpointError("no tok_embeddings.weight: not a LlamaGen GPT state dict")
    vocab, dim = state["tok_embeddings.weight"].shape
    heads = config.get("n_head") or LLAMAGEN_HEADS.get(dim)
    if heads is None:
        raise CheckpointError(f"cannot tell the head count of a width-{dim} LlamaGen model; pass config={{'n_head': ...}}")
    block = config.get("block_size")
    if block is None:
        size = re.search(r"_(\d{3,4})\.pt", name)
        block = (int(size.group(1)) // 16) ** 2 if size else 256
    hidden = state["layers.0.feed_forward.w1.weight"].shape[0]
    multiple_of = int(config.get("multiple_of", 256))
    ffn_mult = config.get("ffn_dim_multiplier")
    if swiglu_hidden_dim(dim, multiple_of, ffn_mult) != hidden:
        multiple_of, ffn_mult = hidden, None  # any rule giving this width: round up to itself
    args: dict[str, Any] = {
        "vocab_size": vocab, "seq_len": int(block), "layout": "grid", "dim": dim,
        "depth": count_indexed(state, "layers"), "num_heads": int(heads), "num_kv_heads": config.get("n_kv_head"),
        "multiple_of": multiple_of, "ffn_dim_multiplier": ffn_mult,
        "norm_eps": float(config.get("norm_eps", 1e-5)), "rope_base": float(config.get("rope_base", 10000)),
        "class_dropout": float(config.get("class_dropout_prob", 0.1)),
        "token_dropout": float(config.get("token_dropout_p", 0.1)),
        "resid_dropout": float(config.get("resid_dropout_p", 0.1)),
        "ffn_dropout": float(config.get("ffn_dropout_p", 0.1)),
        "attn_dropout": float(config.get("attn_dropout_p", 0.0)),
        "drop_path": float(config.get("drop_path_rate", 0.0)),
    }
    if "cls_embedding.cap_proj.fc1.weight" in state:
        args["caption_dim"] = state["cls_embedding.cap_proj.fc1.weight"].shape[1]
        args["cls_token_num"] = state["cls_embedding.uncond_embedding"].shape[0]
        args["num_classes"] = 0
    else:
        args["num_classes"] = state["cls_embedding.embedding_table.weight"].shape[0] - 1
    return args


def load_llamagen(path: Path, config: Mapping[str, Any] | None = None, *, trust_pickle: bool = False) -> GPT:
    """Loader registered as ``llamagen``."""
    weights, file_config = _sources(path, ("state_dict.safetensors", "checkpoint.pt"))
    config = {**file_config, **without_trust_keys(config or {})}
    state = read_state_dict(weights, nested=("model",), trust_pickle=trust_pickle)
    state = {k: v for k, v in state.items() if not LLAMAGEN_DROP.search(k)}
    model = GPT(**llamagen_config(state, config, weights.name))
    load_mapped_state_dict(model, state, LLAMAGEN_KEYS, source=str(weights))
    return model.eval()


@torch.no_grad()
def llamagen_parity(folder: Path) -> dict[str, Result]:
    """Recompute a ``llamagen`` fixture: logits (full, uncond, KV cache), CFG logits, probs, greedy CFG samples."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    model = load_llamagen(folder)
    inp = load_inputs(folder)
    tokens, labels, null = inp["tokens"], inp["class_labels"], inp["null_labels"]
    cond_logits = model(tokens, labels)
    uncond = model(tokens, null)
    model.setup_kv_cache(tokens.shape[0])
    try:
        cond = model.embed_condition(labels, tokens.shape[0])
        steps = [model.step(cond, torch.arange(model.cls_token_num))[:, -1:]]
        for t in range(tokens.shape[1] - 1):
            steps.append(model.decode_one(tokens[:, t], torch.tensor([model.cls_token_num + t]))[:, None])
    finally:
        model.clear_kv_cache()
    cfg = float(config["cfg_scale"])
    cfg_logits = guide(cond_logits, uncond, cfg)
    probs = logits_to_probs(cfg_logits[:, 0], config["temperature"], config["top_k"], config["top_p"])
    greedy = model.generate(tokens.shape[0], labels, cfg=cfg, greedy=True).ids.reshape(tokens.shape[0], -1)
    return {
        "logits": Result(cond_logits, 1e-4), "logits_uncond": Result(uncond, 1e-4),
        "logits_kvcache": Result(torch.cat(steps, dim=1), 1e-4), "cfg_logits": Result(cfg_logits, 5e-4),
        "probs_step0": Result(probs, 1e-5), "greedy_cfg_tokens": Result(greedy, 0), "freqs_cis": Result(model.rope, 1e-6),
    }


# ----------------------------------------------------------------------------- VAR

VAR_DEFAULTS: dict[str, Any] = {"num_classes": 1000, "patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
                                "norm_eps": 1e-6, "mlp_ratio": 4.0, "cond_drop_rate": 0.1, "attn_l2_norm": True}


def var_config(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, Any]:
    """`VAR` init args for an official VAR state dict (sizes from the weights, the rest from ``config``)."""
    if "word_embed.weight" not in state:
        raise CheckpointError("no word_embed.weight: not a VAR transformer state dict")
    cfg = {**VAR_DEFAULTS, **dict(config.get("var", config))}
    if cfg.get("shared_aln"):
        raise CheckpointError("VAR with shared_aln (d36) is not supported by tokenforge's VAR")
    dim, cvae = state["word_embed.weight"].shape
    depth = count_indexed(state, "blocks")
    return {
        "vocab_size": state["head.weight"].shape[0], "cvae": cvae, "patch_nums": [int(p) for p in cfg["patch_nums"]],
        "depth": depth, "embed_dim": dim, "num_heads": state["blocks.0.attn.scale_mul_1H11"].shape[1],
        "mlp_ratio": float(cfg["mlp_ratio"]), "norm_eps": float(cfg["norm_eps"]),
        "num_classes": state["class_emb.weight"].shape[0] - 1, "cond_drop_rate": float(cfg["cond_drop_rate"]),
        "attn_l2_norm": bool(cfg["attn_l2_norm"]), "drop_path_rate": cfg.get("drop_path_rate"),
    }


def load_var(path: Path, config: Mapping[str, Any] | None = None, *, trust_pickle: bool = False) -> VAR:
    """Loader registered as ``var``."""
    weights, file_config = _sources(path, ("var_state_dict.safetensors",))
    config = {**file_config, **without_trust_keys(config or {})}
    state = read_state_dict(weights, nested=("model",), trust_pickle=trust_pickle)
    model = VAR(**var_config(state, config))
    load_mapped_state_dict(model, state, VAR_KEYS, ignore_unexpected=[r"^lvl_1L$", r"^attn_bias_for_masking$"],
                           source=str(weights))
    return model.eval()


@torch.no_grad()
def var_transformer_parity(folder: Path) -> dict[str, Result]:
    """The VAR transformer outputs of a ``var_msrq`` fixture: cond/uncond logits and the greedy CFG image."""
    from tokenforge.hub import from_official

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    inp, out = load_inputs(folder), load_file(str(folder / "outputs.safetensors"))
    model = load_var(folder)
    x, labels = out["var_input_BLCv"], inp["labels"]
    results = {"var_logits_cond": Result(model(labels, x), 1e-4),
               "var_logits_uncond": Result(model(torch.full_like(labels, model.num_classes), x), 1e-4)}
    vqvae = from_official("var_vqvae", folder)
    ar = config.get("ar_infer", {})
    rng = torch.Generator().manual_seed(int(ar.get("g_seed", 0)))
    tokens = model.generate(labels.shape[0], labels, quantizer=vqvae.quantizer, cfg=float(ar.get("cfg", 1.5)),
                            top_k=int(ar.get("top_k", 0)), top_p=float(ar.get("top_p", 0.0)), generator=rng)
    results["ar_greedy_img01"] = Result(vqvae.decode(tokens).add(1).mul(0.5), 1e-4)
    return results


register_official("llamagen", load_llamagen)
register_official("var", load_var)
register_parity("llamagen", llamagen_parity)
