"""Official FlexTok checkpoints -> `FlexTok` (``from_official("flextok", path, config)``), and parity.

The release is ``model.safetensors`` whose ``__metadata__`` holds the Hydra config (one top-level key per
entry, values written with ``str()`` and read back with ``ast.literal_eval``), optionally beside a
``config.json``. Architecture comes from that config (dims, depths, head_dim, registers, levels, VAE). The
VAE's own diffusers config is not in the tokenizer release (``vae.hf_hub_path`` names a separate repo): pass
it as ``config={"vae_config": dict-or-path-to-config.json}``; the parity fixture carries it under
``vae._fixture_vae_config_``.

Key names: module-dict entry names of the fixture are partly reconstructed (fixture README), so EVERY
official -> tokenforge renaming lives in `KEY_TABLE` below; correct a real checkpoint's names there only.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from tokenforge.hub import (CheckpointError, load_mapped_state_dict, read_config_file, read_state_dict,
                            register_official, without_trust_keys)
from tokenforge.parity import Result, load_inputs, register_parity
from tokenforge.tokenizers.flextok.model import FlexTok
from tokenforge.tokenizers.flextok.networks import FlexTokDecoder, FlexTokEncoder, FlexTokVAE

E, D = r"^encoder\.module_dict\.", r"^decoder\.module_dict\."
# official key (regex) -> tokenforge key. The one place to fix entry names of a real checkpoint.
KEY_TABLE: list[tuple[str, str]] = [
    (E + r"enc_patch_emb\.patch_proj\.", "encoder.patch_emb.patch_proj."),
    (E + r"enc_posemb_module\.posembs$", "encoder.patch_emb.posembs"),
    (E + r"enc_register_module\.registers$", "encoder.registers"),
    (E + r"enc_transformer\.blocks\.", "encoder.transformer.blocks."),
    (E + r"enc_to_latents\.proj\.", "encoder.to_latents.proj."),
    (D + r"dec_from_latents\.proj\.", "decoder.from_latents."),
    (D + r"dec_registers_posemb_module\.posembs$", "decoder.register_posembs"),
    (D + r"dec_nested_dropout\.dropout_mask_token$", "decoder.mask_token"),
    (D + r"dec_latent_dropout\.nullcond$", "decoder.nullcond"),
    (D + r"dec_noise_patch_emb\.patch_proj\.", "decoder.patch_emb.patch_proj."),
    (D + r"dec_patches_posemb_module\.posembs$", "decoder.patch_emb.posembs"),
    (D + r"dec_time_embedder\.mlp\.", "decoder.time_embedder.mlp."),
    (D + r"dec_transformer\.blocks\.", "decoder.transformer.blocks."),
    (D + r"dec_to_patches\.adaLN_modulation\.1\.", "decoder.to_patches.adaln.linear."),
    (D + r"dec_to_patches\.proj\.", "decoder.to_patches.proj."),
    # inside the trunks (applied after the prefixes above)
    (r"(\.transformer\.blocks\.\d+\.attn\.)w([qkv])\.", r"\1\2."),
    (r"(\.transformer\.blocks\.\d+\.)adaLN_modulation\.1\.", r"\1adaln.linear."),
]
# official Hydra entry names read for the architecture
ENTRIES = {
    "enc_trunk": "enc_transformer", "enc_registers": "enc_register_module", "enc_posemb": "enc_posemb_module",
    "dec_trunk": "dec_transformer", "dec_time": "dec_time_embedder", "dec_null": "dec_latent_dropout",
    "dec_posemb": "dec_patches_posemb_module",
}


def read_config(path: Path) -> dict[str, Any]:
    """The Hydra config from the safetensors metadata (or a ``config.json`` beside it)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read {path}: truncated or not a safetensors file ({error})") from None
    if "encoder" in meta:
        return {k: (ast.literal_eval(v) if k != "_target_" else v) for k, v in meta.items() if k != "format"}
    side = path.parent / "config.json"
    if side.is_file():
        config = read_config_file(side)
        return config.get("flextok_config", config)
    raise CheckpointError(f"{path} has no FlexTok Hydra config in its metadata and no config.json beside it")


def _entry(config: Mapping[str, Any], part: str, name: str) -> dict[str, Any]:
    try:
        return config[part]["module_dict"][ENTRIES.get(name, name)]
    except KeyError as err:
        raise CheckpointError(f"FlexTok config lacks {part}.module_dict.{ENTRIES.get(name, name)}: {err}") from err


def build_from_config(config: Mapping[str, Any], vae_config: Mapping[str, Any] | None = None) -> FlexTok:
    """Instantiate tokenforge's FlexTok from the official Hydra config."""
    vae_cfg = dict(config.get("vae", {}))
    vae_model_cfg = vae_config or vae_cfg.get("_fixture_vae_config_")
    if vae_model_cfg is None:
        raise CheckpointError(
            "the FlexTok config names its VAE by hub path only "
            f"({vae_cfg.get('hf_hub_path')!r}); pass config={{'vae_config': <diffusers config dict or path>}}"
        )
    vae = FlexTokVAE(config=dict(vae_model_cfg), scaling_factor=vae_cfg.get("scaling_factor"),
                     sample_posterior=bool(vae_cfg.get("sample_posterior", False)))
    levels = list(config["regularizer"]["levels"])
    channels = vae.latent_channels
    enc_t, dec_t = _entry(config, "encoder", "enc_trunk"), _entry(config, "decoder", "dec_trunk")
    registers = int(_entry(config, "encoder", "enc_registers")["n_max"])
    grid = [int(v) for v in _entry(config, "decoder", "dec_posemb")["max_sizes"]]
    null = config["decoder"]["module_dict"].get(ENTRIES["dec_null"], {})
    time = _entry(config, "decoder", "dec_time")
    encoder = FlexTokEncoder(channels, enc_t["dim"], enc_t["depth"], enc_t.get("head_dim", 64), registers,
                             len(levels), grid, mlp_ratio=float(enc_t.get("mlp_ratio", 4.0)))
    decoder = FlexTokDecoder(channels, dec_t["dim"], dec_t["depth"], dec_t.get("head_dim", 64), registers,
                             len(levels), grid, max_timestep=float(time.get("max_timestep", 1.0)),
                             null_cond="learned" if "Learned" in str(null.get("_target_", "Learned")) else "zero",
                             mlp_ratio=float(dec_t.get("mlp_ratio", 4.0)),
                             time_frequency_size=int(time.get("frequency_embedding_size", 256)))
    return FlexTok(vae, encoder, decoder, levels)


def load_flextok(path: str | Path, config: Mapping[str, Any] | None = None) -> FlexTok:
    """``path``: the release's ``model.safetensors``, its folder, or a fixture folder (``state_dict.safetensors``).

    Only safetensors are read (so there is no ``trust_pickle``); a ``trust_pickle`` key in ``config`` is dropped.
    """
    path, config = Path(path), without_trust_keys(config or {})
    if path.is_dir():
        candidates = [path / "model.safetensors", path / "state_dict.safetensors"]
        path = next((p for p in candidates if p.is_file()), candidates[0])
    if not path.is_file():
        raise CheckpointError(f"no FlexTok safetensors at {path}")
    vae_config = config.get("vae_config")
    if isinstance(vae_config, (str, Path)):
        vae_config = read_config_file(vae_config)
    model = build_from_config(config.get("flextok_config") or read_config(path), vae_config)
    state = read_state_dict(path, nested=())
    load_mapped_state_dict(model, state, KEY_TABLE, source=str(path))
    return model.eval()


register_official("flextok", load_flextok)


def parity(folder: Path) -> dict[str, Result]:
    """Recompute the fixture's outputs (README: ids exact, features/velocities 1e-4, decodes 5e-4)."""
    folder = Path(folder)
    settings = json.loads((folder / "config.json").read_text())["fixture_settings"]
    model = load_flextok(folder)
    inputs = load_inputs(folder)
    out: dict[str, Result] = {}
    with torch.no_grad():
        latents = model.vae.encode(inputs["images"])
        z, codes, ids = model.encode_codes(latents)
        out.update(vae_latents=Result(latents, 1e-4), enc_registers_prequant=Result(z, 1e-4),
                   quants=Result(codes, 1e-4), token_ids=Result(ids, 0))
        b, k_fwd = len(ids), int(settings["fwd_keep_k"])
        full = model.ids_to_codes(ids[:, :k_fwd])
        keep = torch.full((b,), k_fwd)
        x_t, t = inputs["fwd_noised_latents"], inputs["fwd_timesteps"]
        name = f"dec_velocity_k{k_fwd}"
        out[name] = Result(model.decoder(x_t, t, model.decoder.condition(full, keep)), 1e-4)
        drop = torch.ones(b, dtype=torch.bool)
        out[f"{name}_uncond"] = Result(model.decoder(x_t, t, model.decoder.condition(full, keep, drop)), 1e-4)
        steps, noise = int(settings["timesteps"]), inputs["dec_noise"]
        for k in settings["decode_ks"]:
            lat = model.decode_latents(ids[:, :k], noise=noise, steps=steps, guidance_scale=1.0)
            out[f"decoded_latents_k{k}"] = Result(lat, 5e-4)
            out[f"decoded_images_k{k}"] = Result(model.vae.decode(lat), 5e-4)
        for name, g in settings.get("guided", {}).items():
            lat = model.decode_latents(ids[:, :k_fwd], noise=noise, steps=steps, guidance_scale=g["guidance_scale"],
                                       apg=bool(g["perform_norm_guidance"]))
            out[f"decoded_latents_k{k_fwd}_{name}"] = Result(lat, 5e-4)
    return out


register_parity("flextok", parity)
