"""Official MAR checkpoints -> `MAR`, and the ``mar`` parity check (E-CAR's public diffusion-head peer).

``from_official("mar", path, config)``: a fixture folder (``config.json`` with MAR's constructor names,
``state_dict.safetensors``) or a released ``checkpoint-last.pth`` (``{"model", "model_ema", ...}``; the EMA
weights are used, as MAR's evaluation does). The official keys match `MAR`'s one to one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tokenforge.generators.ecar.mar import MAR, patchify
from tokenforge.hub import (load_mapped_state_dict, read_config_file, read_state_dict, register_official,
                            without_trust_keys)
from tokenforge.parity import Result, load_inputs, register_parity

MAR_ARGS = ("img_size", "vae_stride", "patch_size", "encoder_embed_dim", "encoder_depth", "encoder_num_heads",
            "decoder_embed_dim", "decoder_depth", "decoder_num_heads", "mlp_ratio", "norm_eps", "vae_embed_dim",
            "buffer_size", "class_num", "label_drop_prob", "diffloss_d", "diffloss_w", "num_sampling_steps",
            "diffusion_batch_mul", "diffusion_steps", "learn_sigma")
# released sizes (MAR README): encoder = decoder width/depth/heads, diffusion MLP depth x width
MAR_SIZES = {768: (12, 12, 6, 1024), 1024: (16, 16, 8, 1280), 1280: (20, 16, 12, 1536)}


def load_mar(path: Path, config: dict[str, Any] | None = None, *, trust_pickle: bool = False) -> MAR:
    """Loader for ``mar``; trust comes from ``trust_pickle`` only (a folder's config.json cannot give it)."""
    path = Path(path)
    cfg: dict[str, Any] = {}
    if path.is_dir():
        if (path / "config.json").is_file():
            cfg.update(read_config_file(path / "config.json"))
        weights = next((path / n for n in ("state_dict.safetensors", "checkpoint-last.pth") if (path / n).is_file()),
                       None)
        if weights is None:
            raise FileNotFoundError(f"{path} holds neither state_dict.safetensors nor checkpoint-last.pth")
    elif path.is_file():
        weights = path
    else:
        raise FileNotFoundError(f"no MAR checkpoint at {path}")
    cfg.update(without_trust_keys(config or {}))
    state = read_state_dict(weights, nested=("model_ema", "model"), trust_pickle=trust_pickle)
    width = state["z_proj.weight"].shape[0]
    depth, heads, dl_depth, dl_width = MAR_SIZES.get(width, (None, None, None, None))
    derived = {
        "encoder_embed_dim": width, "decoder_embed_dim": state["decoder_embed.weight"].shape[0],
        "encoder_depth": len({k.split(".")[1] for k in state if k.startswith("encoder_blocks.")}),
        "decoder_depth": len({k.split(".")[1] for k in state if k.startswith("decoder_blocks.")}),
        "class_num": state["class_emb.weight"].shape[0],
        "diffloss_w": state["diffloss.net.input_proj.weight"].shape[0],
        "diffloss_d": len({k.split(".")[3] for k in state if k.startswith("diffloss.net.res_blocks.")}),
        "buffer_size": state["encoder_pos_embed_learned"].shape[1] - state["diffusion_pos_embed_learned"].shape[1],
        "learn_sigma": state["diffloss.net.final_layer.linear.weight"].shape[0] == 2 * state["z_proj.weight"].shape[1],
    }
    args = {k: cfg[k] for k in MAR_ARGS if k in cfg}
    args.update({k: v for k, v in derived.items() if k not in args})
    if "encoder_num_heads" not in args:
        if heads is None:
            raise ValueError(f"MAR width {width} is not a released size; give encoder_num_heads in the config")
        args["encoder_num_heads"] = args.setdefault("decoder_num_heads", heads)
    if "train_noise_schedule" in cfg:  # MAR hard-codes cosine; a variant may name another
        args["noise_schedule"] = cfg["train_noise_schedule"]
    if "attn_dropout" in cfg:
        args["dropout"] = cfg["attn_dropout"]
    args["num_sampling_steps"] = str(args.get("num_sampling_steps", "100"))
    model = MAR(**args)
    load_mapped_state_dict(model, state, None)
    return model.eval()


def mar_parity(folder: Path) -> dict[str, Result]:
    cfg = json.loads((folder / "config.json").read_text())
    model = load_mar(folder)
    x = load_inputs(folder)
    out: dict[str, Result] = {}
    with torch.no_grad():
        tokens = patchify(x["latents"], model.patch_size)
        out["patchified"] = Result(tokens, 1e-6)
        b = tokens.shape[0]
        enc = model.forward_mae_encoder(tokens, x["mask"], model.class_embedding(x["labels"], b))
        out["encoder_out"] = Result(enc, 1e-4)
        out["encoder_out_uncond"] = Result(model.forward_mae_encoder(tokens, x["mask"], model.class_embedding(None, b)),
                                           1e-4)
        z = model.forward_mae_decoder(enc, x["mask"])
        out["decoder_out_z"] = Result(z, 1e-4)
        n = x["mlp_x"].shape[0]
        c = z.reshape(-1, z.shape[-1])[:n]
        out["mlp_c"] = Result(c, 1e-4)
        net = model.diffloss.net
        out["mlp_out"] = Result(net(x["mlp_x"], x["mlp_t"], c), 1e-4)
        h = n // 2
        xs, ts = torch.cat([x["mlp_x"][:h]] * 2), torch.cat([x["mlp_t"][:h]] * 2)
        scale = float(cfg.get("cfg_scale_in_fixture", 1.0))
        out["mlp_cfg_out"] = Result(net.forward_with_cfg(xs, ts, torch.cat([c[:h], c[h:2 * h]]), scale), 1e-4)
        losses = model.diffloss.train_diffusion.training_losses(net, x["loss_target"], x["mlp_t"], x["loss_noise"], c=c)
        for name in [k for k in ("loss", "mse", "vb") if k in losses]:  # relative tolerance: scaled by the size
            value = losses[name]
            out[f"loss_{name}"] = Result(value, 1e-4 * max(1.0, value.abs().max().item()))
        gen = model.diffloss.gen_diffusion
        t = torch.full((n,), int(cfg["psample_respaced_t"]), dtype=torch.long)
        step = gen.p_sample(net, x["mlp_x"], t, float(cfg.get("psample_temperature", 1.0)), x["psample_noise"], c=c)
        out["psample_sample"] = Result(step["sample"], 1e-4)
        out["psample_pred_xstart"] = Result(step["pred_xstart"], 1e-4)
        out["gen_timestep_map"] = Result(gen.timestep_map, 0)
        out["gen_betas"] = Result(gen.betas, 1e-12)
    return out


register_official("mar", load_mar)
register_parity("mar", mar_parity)
