"""A tiny Stable Diffusion pipeline (fixture UNet + LinFusion, tiny random VAE / text encoder) generates offline,
directly and through the SDEdit ladder, and the mounted modules are what it runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokenforge.generators.linfusion import LinFusion
from tokenforge.generators.linfusion.components import tiny_components
from tokenforge.generators.linfusion.generate import generate
from tokenforge.config_models import compose

REPO = Path(__file__).resolve().parents[1]
TINY = compose(REPO / "configs/generators/linfusion/tiny.yaml")["model"]["init_args"]["tiny"]


@pytest.fixture(scope="module")
def pipe(fixtures_dir: Path):
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    parts = tiny_components(**TINY)
    unet = UNet2DConditionModel.from_pretrained(str(fixtures_dir / "linfusion" / "unet")).eval()
    pipe = StableDiffusionPipeline(vae=parts.vae.eval(), text_encoder=parts.text_encoder.eval(), tokenizer=None,
                                   unet=unet, scheduler=DDIMScheduler.from_config(parts.scheduler.config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        embeds = parts.encode_text(["a red lighthouse"], torch.device("cpu"))
        negative = parts.encode_text([""], torch.device("cpu"))
    return pipe, {"prompt_embeds": embeds, "negative_prompt_embeds": negative}


def test_tiny_pipeline_generates_with_mounted_linfusion(pipe, fixtures_dir: Path) -> None:
    pipe, embeds = pipe
    plain = generate(pipe, None, 32, 32, steps=3, seed=5, **embeds)
    lin = LinFusion.construct_for(pipe, pretrained=fixtures_dir / "linfusion" / "linfusion")
    calls: list[int] = []
    hook = lin._modules["0"].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[1]))
    try:
        image = generate(pipe, None, 32, 32, steps=3, seed=5, **embeds)
        again = generate(pipe, None, 32, 32, steps=3, seed=5, **embeds)
        big = generate(pipe, None, 32, 48, steps=2, seed=5, ladder=[0.5], **embeds)
    finally:
        hook.remove()
        lin.unmount()
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0
    assert torch.equal(image, again)  # seeded
    assert (image - plain).abs().max() > 1e-3  # the LinFusion modules changed the result
    assert calls[0] == 16 * 16  # module 0 saw the 16x16 latent tokens
    assert big.shape == (1, 3, 64, 96)  # ladder doubled the 32x48 image once
    assert 32 * 48 in calls  # img2img stage ran LinFusion on the doubled latent (32x48 tokens)
    with pytest.raises(ValueError, match="multiples of 8"):
        generate(pipe, None, 30, 32, **embeds)


def test_bench_cpu_smoke(tmp_path: Path) -> None:
    import json

    from tokenforge.generators.linfusion.bench import main

    assert main(["--size", "tiny", "--resolutions", "128", "--dtype", "float32", "--warmup", "0", "--repeats", "1",
                 "--device", "cpu", "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [(r["attention"], r["tokens"]) for r in rows] == [("sdpa", 256), ("linfusion", 256)]
    assert all(r["forward_ms"] > 0 for r in rows)
