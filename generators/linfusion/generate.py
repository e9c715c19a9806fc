"""Text-to-image with LinFusion mounted on a diffusers Stable Diffusion pipeline, fully offline.

Recipes (specs/linfusion.md §6): direct generation at any size (linear attention makes large latents
affordable), and the SDEdit ladder: generate, then repeatedly resize x2 and run img2img with decreasing
strengths (official notebook: 0.4, 0.3, 0.2, 0.1 for 2K..16K, same seed), with VAE tiling for large images.

    tokenforge linfusion --linfusion LINFUSION_DIR --base LOCAL_SD_FOLDER --prompt "a lighthouse" \
        --height 1024 --width 2048 [--ladder 0.4 0.3] --out out.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenforge import console
from tokenforge.devices import resolve_device
from tokenforge.errors import UsageError
from tokenforge.failure import one_line
from tokenforge.generators.linfusion.linfusion import LinFusion

TILING_ABOVE = 2048 * 2048  # pixels; official tiles: sample 2048, latent 256


def load_pipeline(base: str, linfusion: str | None, dtype: torch.dtype = torch.float32, device: str = "cpu",
                  chunk_size: int | None = None):
    """A local diffusers SD / SDXL folder (``local_files_only``) with LinFusion mounted (random if no folder)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(base, torch_dtype=dtype, local_files_only=True, safety_checker=None,
                                             requires_safety_checker=False)
    pipe.to(device)
    pipe.linfusion = LinFusion.construct_for(pipe, pretrained=linfusion, chunk_size=chunk_size)
    return pipe


def _img2img(pipe):
    from diffusers import AutoPipelineForImage2Image

    return AutoPipelineForImage2Image.from_pipe(pipe)


def generate(pipe, prompt: str | None, height: int, width: int, steps: int = 25, guidance: float = 7.5,
             seed: int = 123, ladder: list[float] | tuple[float, ...] = (), **embeds: Any) -> Tensor:
    """Images (B, 3, H, W) in [0, 1]; each ladder strength doubles the size through img2img.

    ``embeds`` (``prompt_embeds`` / ``negative_prompt_embeds``) replace ``prompt`` for pipelines without a tokenizer.
    """
    for size in (height, width):
        if size % 8:
            raise ValueError(f"height and width must be multiples of 8 (the VAE factor), got {height}x{width}")
    call = dict(embeds) if embeds else {"prompt": prompt}
    image = pipe(**call, height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                 generator=torch.Generator(device="cpu").manual_seed(seed), output_type="pt").images
    for strength in ladder:
        image = F.interpolate(image.float(), scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
        if image.shape[-1] * image.shape[-2] > TILING_ABOVE and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()
            pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = 2048, 256
        image = _img2img(pipe)(**call, image=image.to(pipe.vae.dtype), strength=strength, num_inference_steps=steps,
                               guidance_scale=guidance, generator=torch.Generator(device="cpu").manual_seed(seed),
                               output_type="pt").images
    return image


def save_png(image: Tensor, path: Path) -> None:
    from PIL import Image

    array = (image.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(array).save(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokenforge linfusion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--linfusion", help="LinFusion folder (config.json + diffusion_pytorch_model.safetensors)")
    p.add_argument("--base", required=True, help="local diffusers Stable Diffusion folder")
    p.add_argument("--prompt", required=True)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--ladder", type=float, nargs="*", default=[], help="SDEdit strengths, each doubles the size")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk in LinFusion (bounds memory)")
    p.add_argument("--out", type=Path, default=Path("linfusion.png"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not Path(args.base, "model_index.json").is_file():
        print(f"tokenforge linfusion: --base {args.base} is not a local diffusers folder (no model_index.json); "
              "give the folder of a Stable Diffusion pipeline saved with diffusers", file=sys.stderr)
        return 2
    try:
        device = str(resolve_device(args.device))
        pipe = load_pipeline(args.base, args.linfusion, getattr(torch, args.dtype), device, args.chunk_size)
        pipe.set_progress_bar_config(disable=not console.progress_enabled())
        images = generate(pipe, args.prompt, args.height, args.width, args.steps, args.guidance, args.seed, args.ladder)
    except (UsageError, FileNotFoundError, ValueError, OSError) as error:
        print(f"tokenforge linfusion: {one_line(error)}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_png(images[0], args.out)
    print(json.dumps({"out": str(args.out), "size": list(images.shape[-2:])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
