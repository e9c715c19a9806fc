"""Local diffusers ``AutoencoderKL`` folders -> `KLAutoencoder` (``from_official("diffusers_vae", folder)``).

The folder is what ``AutoencoderKL.save_pretrained`` writes (``config.json`` + weights) or a ``vae/`` subfolder of
a pipeline; nothing is downloaded. ``config`` may override ``kl_weight`` (training only). Block types other than
the plain ``DownEncoderBlock2D`` / ``UpDecoderBlock2D`` stacks (all released SD / MAR-style KL VAEs) are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from tokenforge.hub import (CheckpointError, CheckpointNotFoundError, load_checkpoint, load_mapped_state_dict,
                            read_config_file, register_official)
from tokenforge.tokenizers.klvae.model import KLAutoencoder

FIELDS = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups", "scaling_factor",
          "shift_factor", "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention", "sample_size")


def load_diffusers_vae(path: Path, config: dict[str, Any] | None = None) -> KLAutoencoder:
    path = Path(path)
    if (path / "vae" / "config.json").is_file():
        path = path / "vae"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a diffusers AutoencoderKL folder (no config.json)")
    cfg = read_config_file(path / "config.json")
    bad = {t for t in cfg.get("down_block_types", []) if t != "DownEncoderBlock2D"}
    bad |= {t for t in cfg.get("up_block_types", []) if t != "UpDecoderBlock2D"}
    if bad or cfg.get("in_channels", 3) != 3 or cfg.get("out_channels", 3) != 3:
        raise CheckpointError(f"{path}: only RGB AutoencoderKL with plain encoder/decoder blocks is supported "
                              f"(got {sorted(bad)})")
    args = {k: cfg[k] for k in FIELDS if k in cfg}
    if "sample_size" in args and isinstance(args["sample_size"], (list, tuple)):
        args["sample_size"] = int(args["sample_size"][0])
    args["block_out_channels"] = list(args.get("block_out_channels", [64]))
    args.update(config or {})
    _check_weights(path)
    from diffusers import AutoencoderKL  # imported only for a folder that passed the checks (a slow import)

    try:  # diffusers reads safetensors, or a .bin with torch.load(weights_only=True): never unpickles code
        official = AutoencoderKL.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"cannot load the AutoencoderKL weights in {path}: "
                              f"{str(error).strip().splitlines()[0] if str(error).strip() else error!r}") from None
    model = KLAutoencoder(**args)
    load_mapped_state_dict(model, {f"vae.{k}": v for k, v in official.state_dict().items()}, None,
                           source=str(path))
    return model.eval()


def _check_weights(folder: Path) -> None:
    """Fail fast, in one line, on a missing, truncated or pickled weights file (before diffusers builds a model)."""
    safetensors, pickled = folder / "diffusion_pytorch_model.safetensors", folder / "diffusion_pytorch_model.bin"
    if safetensors.is_file():
        try:
            with safe_open(str(safetensors), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"cannot read {safetensors}: truncated or not safetensors ({error})") from None
    elif pickled.is_file():
        load_checkpoint(pickled)  # weights-only: a file that needs unpickling is refused here
    else:
        raise CheckpointNotFoundError(f"{folder} has no diffusion_pytorch_model.safetensors (or .bin)")


register_official("diffusers_vae", load_diffusers_vae)
