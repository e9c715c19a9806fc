"""Sampling a diffusers Stable Diffusion pipeline that has LinFusion mounted: direct, or the SDEdit ladder.

Recipes (specs/linfusion.md §6): direct generation at any size (linear attention makes large latents
affordable), and the SDEdit ladder: generate, then repeatedly resize x2 and run img2img with decreasing
strengths (official notebook: 0.4, 0.3, 0.2, 0.1 for 2K..16K, same seed), with VAE tiling for large images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

TILING_ABOVE = 2048 * 2048  # pixels; official tiles: sample 2048, latent 256


def _img2img(pipe: Any) -> Any:
    from diffusers import AutoPipelineForImage2Image

    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    img2img.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))  # quiet stays quiet
    return img2img


def generate(pipe: Any, prompt: str | list[str] | None, height: int, width: int, steps: int = 25,
             guidance: float = 7.5, seed: int = 123, ladder: list[float] | tuple[float, ...] = (), *,
             generator: torch.Generator | None = None, output_type: str = "pt", **embeds: Any) -> Tensor:
    """Images (B, 3, H, W) in [0, 1] (``output_type="latent"``: the last stage's scaled VAE latents); each ladder
    strength doubles the size through img2img.

    ``embeds`` (``prompt_embeds`` / ``negative_prompt_embeds``) replace ``prompt`` for pipelines without a
    tokenizer. ``generator`` draws every stage's noise; without it each stage starts from ``seed``.
    """
    for size in (height, width):
        if size % 8:
            raise ValueError(f"height and width must be multiples of 8 (the VAE factor), got {height}x{width}")

    def rng() -> torch.Generator:
        return generator if generator is not None else torch.Generator(device="cpu").manual_seed(seed)

    call = dict(embeds) if embeds else {"prompt": prompt}
    last = not ladder
    image = pipe(**call, height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                 generator=rng(), output_type=output_type if last else "pt").images
    for i, strength in enumerate(ladder):
        last = i == len(ladder) - 1
        image = F.interpolate(image.float(), scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
        if image.shape[-1] * image.shape[-2] > TILING_ABOVE and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()
            pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = 2048, 256
        image = _img2img(pipe)(**call, image=image.to(pipe.vae.dtype), strength=strength, num_inference_steps=steps,
                               guidance_scale=guidance, generator=rng(),
                               output_type=output_type if last else "pt").images
    return image


def save_png(image: Tensor, path: Path) -> None:
    """One image ``(3, H, W)`` in [0, 1] as a PNG."""
    from PIL import Image

    array = (image.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(array).save(path)
