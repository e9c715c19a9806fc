"""Local diffusers ``AutoencoderKL`` folders -> `KLAutoencoder` (``from_official("diffusers_vae", folder)``).

The folder is what ``AutoencoderKL.save_pretrained`` writes (``config.json`` + weights) or a ``vae/`` subfolder of
a pipeline; nothing is downloaded. ``config`` may override ``kl_weight`` (training only). Block types other than
the plain ``DownEncoderBlock2D`` / ``UpDecoderBlock2D`` stacks (all released SD / MAR-style KL VAEs) are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenforge.hub import CheckpointError, load_mapped_state_dict, read_config_file, register_official
from tokenforge.tokenizers.klvae.model import KLAutoencoder

FIELDS = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups", "scaling_factor",
          "shift_factor", "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention", "sample_size")


def load_diffusers_vae(path: Path, config: dict[str, Any] | None = None) -> KLAutoencoder:
    from diffusers import AutoencoderKL

    path = Path(path)
    if (path / "vae" / "config.json").is_file():
        path = path / "vae"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a diffusers AutoencoderKL folder (no config.json)")
    cfg = read_config_file(path / "config.json")
    bad = {t for t in cfg.get("down_block_types", []) if t != "DownEncoderBlock2D"}
    bad |= {t for t in cfg.get("up_block_types", []) if t != "UpDecoderBlock2D"}
    if bad or cfg.get("in_channels", 3) != 3 or cfg.get("out_channels", 3) != 3:
        raise ValueError(f"{path}: only RGB AutoencoderKL with plain encoder/decoder blocks is supported (got {bad})")
    args = {k: cfg[k] for k in FIELDS if k in cfg}
    if "sample_size" in args and isinstance(args["sample_size"], (list, tuple)):
        args["sample_size"] = int(args["sample_size"][0])
    args["block_out_channels"] = list(args.get("block_out_channels", [64]))
    args.update(config or {})
    model = KLAutoencoder(**args)
    try:  # diffusers reads safetensors, or a .bin with torch.load(weights_only=True): never unpickles code
        official = AutoencoderKL.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"cannot load the AutoencoderKL weights in {path}: "
                              f"{str(error).strip().splitlines()[0] if str(error).strip() else error!r}") from None
    load_mapped_state_dict(model, {f"vae.{k}": v for k, v in official.state_dict().items()}, None,
                           source=str(path))
    return model.eval()


register_official("diffusers_vae", load_diffusers_vae)
