"""Official ENAT checkpoints -> `ENAT`, and the parity check of the ``enat`` fixture.

Released weights (``assets/nnet_ema.pth``, ``nnet_ema_512.pth``) are plain EMA state dicts with the key names
of `tokenforge.generators.enat.model` (spec nat_car.md §1.5). Loading drops ``prev_embedder.*`` (built but
never used by the official model), ``*position_ids`` and a ``module.`` prefix, as the official TrainState
does. Sizes come from the weights; the head count and the encoder/decoder split cannot be read off them and
come from ``config`` (``num_heads``, ``enc_dec`` = [enc, dec]) — a fixture folder's ``config.json`` or the
released ENAT-L values (16 heads, 22 + 2 blocks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from tokenforge.generators.enat.model import ENAT
from tokenforge.generators.enat.sampler import enat_generate
from tokenforge.hub import (CheckpointError, load_mapped_state_dict, read_config_file, read_state_dict,
                            register_official, without_trust_keys)
from tokenforge.parity import Result, load_inputs, register_parity

ENAT_L = {"num_heads": 16, "enc_dec": [22, 2]}
FLOAT_TOL = 1e-4


def _read(path: Path, trust_pickle: bool = False) -> tuple[dict[str, Tensor], dict[str, Any]]:
    config: dict[str, Any] = {}
    if path.is_dir():
        if (path / "config.json").is_file():
            config = read_config_file(path / "config.json")
        path = path / "state_dict.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no ENAT checkpoint at {path} (expected nnet_ema.pth, a .safetensors file or a "
                                "folder with state_dict.safetensors)")
    state = read_state_dict(path, nested=("state_dict",), strip="module.", trust_pickle=trust_pickle)
    return state, dict(config.get("generator", config))


def enat_architecture(state: Mapping[str, Tensor], config: Mapping[str, Any]) -> dict[str, Any]:
    """`ENAT` init args from the weights, plus head count and encoder/decoder split from ``config``."""
    if "x_embedder.word_embeddings.weight" not in state:
        raise CheckpointError("state dict lacks x_embedder.word_embeddings.weight: not an ENAT checkpoint")
    vocab, dim = state["x_embedder.word_embeddings.weight"].shape
    depth = 0
    while f"blocks.{depth}.attn.q.weight" in state:
        depth += 1
    enc, dec = config.get("enc_dec", [depth - 2, 2])
    if enc + dec != depth:
        raise CheckpointError(f"enc_dec {enc}+{dec} does not match the {depth} blocks in the checkpoint")
    return {
        "seq_len": int(state["x_embedder.position_embeddings.weight"].shape[0]),
        "hidden_size": int(dim),
        "num_heads": int(config.get("num_heads", ENAT_L["num_heads"])),
        "enc_depth": int(enc),
        "dec_depth": int(dec),
        "mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[0] / dim,
        "codebook_size": int(vocab - 1),
        "num_classes": int(state["y_embedder.embedding_table.weight"].shape[0] - 1),
        "class_dropout_prob": float(config.get("class_dropout_prob", 0.1)),
    }


def _key_map(key: str) -> str | None:
    return None if key.startswith("prev_embedder.") or key.endswith("position_ids") else key


def load_enat(path: str | Path, config: Mapping[str, Any] | None = None, *, trust_pickle: bool = False) -> ENAT:
    """Loader for ``enat``: an official state dict (file or fixture folder) -> `ENAT` in eval mode."""
    state, file_config = _read(Path(path), trust_pickle)
    arch = enat_architecture(state, {**file_config, **without_trust_keys(config or {})})
    model = ENAT(**arch)
    load_mapped_state_dict(model, state, _key_map, source=str(path))
    return model.eval()


@torch.no_grad()
def enat_parity(folder: Path) -> dict[str, Result]:
    """Recompute every output of an ``enat`` fixture: forwards, reuse, the 8-step sampler replay and the VQ."""
    from tokenforge.tokenizers.vqgan.mage import load_mage_vqgan

    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    inp = load_inputs(folder)
    model = load_enat(folder)
    out: dict[str, Result] = {}
    s1 = model(inp["ids_step1"], inp["labels"])
    s2 = model(inp["ids_step2"], inp["labels"], prev=s1)
    out.update(
        step1_logits=Result(s1.logits, FLOAT_TOL), step1_feat=Result(s1.feat, FLOAT_TOL),
        step1_masking=Result(s1.masking, 0), step1_encoder_out=Result(s1.extras["encoder_out"], FLOAT_TOL),
        step1_decoder_visible_ctx=Result(s1.extras["decoder_ctx"], FLOAT_TOL),
        step2_reuse_logits=Result(s2.logits, FLOAT_TOL), step2_reuse_feat=Result(s2.feat, FLOAT_TOL),
        step2_reuse_encoder_out=Result(s2.extras["encoder_out"], FLOAT_TOL),
        step2_reuse_decoder_visible_ctx=Result(s2.extras["decoder_ctx"], FLOAT_TOL),
        step2_noreuse_logits=Result(model(inp["ids_step2"], inp["labels"]).logits, FLOAT_TOL),
        allmask_logits=Result(model(inp["ids_allmask"], inp["labels"]).logits, FLOAT_TOL),
    )
    sc = cfg.get("sampler", {})
    gen = enat_generate(model, inp["gen_labels"].shape[0], inp["gen_labels"], steps=int(sc.get("gen_steps", 8)),
                        cfg_scale=float(sc.get("cfg_scale", 2.5)), mask_temp=float(sc.get("mask_temp", 1.5)),
                        samp_temp=float(sc.get("samp_temp", 6.0)), return_trace=True,
                        noise={"draws": inp["gen_sampled_ids"], "gumbel": inp["gen_gumbel"]})
    out.update(gen_final_ids=Result(gen.ids.reshape(gen.ids.shape[0], -1), 0),
               gen_ids_in=Result(gen.meta["ids_in"], 0),
               gen_logp_step0=Result(gen.meta["logp"][0], FLOAT_TOL),
               gen_logp_step1=Result(gen.meta["logp"][1], FLOAT_TOL))
    vq = load_mage_vqgan(folder)
    z = vq.features01(inp["vq_image"])
    ids = vq.quantizer.encode(z)
    exp = load_file(str(folder / "outputs.safetensors"))
    rel = lambda name: FLOAT_TOL * max(1.0, float(exp[name].abs().max())) if name in exp else FLOAT_TOL  # noqa: E731
    out.update(vq_encoder_out=Result(z, rel("vq_encoder_out")), vq_indices=Result(ids, 0),
               vq_quant=Result(vq.quantizer.decode(ids), rel("vq_quant")),
               vq_decode_code=Result(vq.decode_code01(ids), rel("vq_decode_code")))
    return out


register_official("enat", load_enat)
register_parity("enat", enat_parity)
