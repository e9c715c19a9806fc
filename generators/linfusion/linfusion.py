"""The LinFusion container: one `GeneralizedLinearAttention` per UNet self-attention, mounted in place.

``modules_list`` entries are ``{"module_name", "dim_n", "heads", "projection_mid_dim"}`` in the official
order (``unet.named_modules()`` order: down blocks, UP blocks, then the mid block); module i is registered
as child ``"{i}"``, so the state dict keys are ``"{i}.to_q.weight"`` ... exactly as in the released
``diffusion_pytorch_model.safetensors``. `save_official` / `load_official` read and write that diffusers
folder layout (``config.json`` with ``_class_name: "LinFusion"``). Unlike the official code, mounting is
reversible (`unmount`) and works on a UNet or any pipeline that has ``.unet``.

As a `Generator`, LinFusion samples and scores on a diffusers pipeline given by `attach_pipeline` (the frozen
base UNet, text encoder and scheduler are not part of LinFusion's checkpoint): ``generate`` returns the scaled VAE
latents, which the base's VAE (a KL tokenizer, ``from_official("diffusers_vae", BASE/vae)``) decodes;
``nll`` is the denoising loss on held-out latents.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.generators.base import Generator
from tokenforge.generators.linfusion.attention import GeneralizedLinearAttention
from tokenforge.generators.linfusion.components import encode_text
from tokenforge.generators.linfusion.distill import noise_target
from tokenforge.generators.linfusion.render import generate as render
from tokenforge.tokenizers.base import Tokens

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"


def _unet(obj: Any) -> nn.Module:
    unet = getattr(obj, "unet", obj)
    if not isinstance(unet, nn.Module):
        raise TypeError(f"expected a diffusers UNet or a pipeline with .unet, got {type(obj).__name__}")
    return unet


def default_modules_list(unet_or_pipe: Any, mid_dim_scale: int | None = None) -> list[dict[str, Any]]:
    """One entry per diffusers ``Attention`` named ``*attn1*`` (named_modules order), like the official code."""
    from diffusers.models.attention_processor import Attention

    entries = []
    for name, module in _unet(unet_or_pipe).named_modules():
        if "attn1" in name and isinstance(module, (Attention, GeneralizedLinearAttention)):
            dim = module.to_q.weight.shape[0]
            mid = None if mid_dim_scale is None else dim // mid_dim_scale
            entries.append({"module_name": name, "dim_n": dim, "heads": module.heads, "projection_mid_dim": mid})
    if not entries:
        raise ValueError("no self-attention (attn1) modules found; is this a diffusers UNet2DConditionModel?")
    return entries


class LinFusion(Generator):
    """LinFusion modules for one UNet layout; `mount_to` swaps them in for the UNet's ``attn1`` layers."""

    nll_metric = "loss"
    nll_note = ("denoising MSE of the base UNet with LinFusion mounted on held-out VAE latents (noise and "
                "timesteps seeded per batch); not a likelihood")

    def __init__(self, modules_list: list[dict[str, Any]], chunk_size: int | None = None) -> None:
        super().__init__()
        self.modules_list = [dict(m) for m in modules_list]
        for i, m in enumerate(self.modules_list):
            module = GeneralizedLinearAttention(m["dim_n"], m["heads"], m.get("projection_mid_dim"), chunk_size)
            self.add_module(str(i), module)
        self._originals: dict[str, nn.Module] = {}
        self._mounted_on: list[nn.Module] = []
        self._pipeline: list[Any] = []  # a list: the diffusers pipeline stays outside the module tree

    @property
    def modules_dict(self) -> dict[str, GeneralizedLinearAttention]:
        return {m["module_name"]: self._modules[str(i)] for i, m in enumerate(self.modules_list)}

    @classmethod
    def construct_for(
        cls,
        unet_or_pipe: Any,
        pretrained: str | os.PathLike | None = None,
        mid_dim_scale: int | None = None,
        chunk_size: int | None = None,
    ) -> LinFusion:
        """Build (random, or loaded from an official folder) and mount on ``unet_or_pipe``."""
        if pretrained is not None:
            model = cls.load_official(pretrained, chunk_size=chunk_size)
        else:
            model = cls(default_modules_list(unet_or_pipe, mid_dim_scale), chunk_size=chunk_size)
        return model.mount_to(unet_or_pipe)

    def mount_to(self, unet_or_pipe: Any) -> LinFusion:
        """Replace each listed ``attn1`` by its LinFusion module; moves self to the UNet's device/dtype."""
        unet = _unet(unet_or_pipe)
        if self._mounted_on:
            raise RuntimeError("this LinFusion is already mounted; call unmount() first")
        param = next(unet.parameters())
        self.to(device=param.device, dtype=param.dtype)
        for name, module in self.modules_dict.items():
            parent_name, _, child = name.rpartition(".")
            try:
                parent = unet.get_submodule(parent_name)
                original = getattr(parent, child)
            except AttributeError as e:
                raise ValueError(f"the UNet has no module {name!r}; this LinFusion was made for another layout") from e
            if getattr(original, "to_q", None) is None or original.to_q.weight.shape[0] != module.dim:
                raise ValueError(f"{name}: width differs from the LinFusion module's {module.dim}")
            self._originals[name] = original
            setattr(parent, child, module)
        self._mounted_on.append(unet)
        return self

    def unmount(self) -> None:
        """Put the original attention modules back."""
        if not self._mounted_on:
            return
        unet = self._mounted_on.pop()
        for name, original in self._originals.items():
            parent_name, _, child = name.rpartition(".")
            setattr(unet.get_submodule(parent_name), child, original)
        self._originals.clear()

    # ------------------------------------------------------------------ the Generator contract
    def attach_pipeline(self, pipe: Any) -> LinFusion:
        """Sample and score on ``pipe`` (a diffusers Stable Diffusion pipeline): mount there (moving off any
        other UNet) and keep it, outside the state dict."""
        if self._mounted_on and self._mounted_on[-1] is not _unet(pipe):
            self.unmount()
        if not self._mounted_on:
            self.mount_to(pipe)
        self._pipeline[:] = [pipe]
        return self

    @property
    def pipeline(self) -> Any:
        if not self._pipeline:
            raise RuntimeError("LinFusion samples on a Stable Diffusion pipeline: call attach_pipeline(pipe) first "
                               "(tokenforge generate --base SD_FOLDER)")
        return self._pipeline[0]

    def prompt_embeds(self, prompts: list[str]) -> Tensor:
        """Text-encoder features of ``prompts`` through the attached pipeline's tokenizer and text encoder."""
        pipe = self.pipeline
        return encode_text(getattr(pipe, "tokenizer", None), pipe.text_encoder, prompts, pipe.unet.device)

    @torch.no_grad()
    def generate(self, n: int, condition: Tensor | None = None, *, prompt: str | None = None, height: int = 512,
                 width: int = 512, steps: int = 25, guidance: float = 7.5, ladder: list[float] | tuple = (),
                 generator: torch.Generator | None = None, progress: bool = False) -> Tokens:
        """``n`` images' scaled VAE latents in ``Tokens.latents`` for ``prompt`` (or ``condition``: text-encoder
        features ``[n or 1, T, D]``), ``steps`` denoising steps, guidance ``guidance``, then each ``ladder``
        strength doubles the size through img2img (SDEdit)."""
        pipe = self.pipeline
        pipe.set_progress_bar_config(disable=not progress)
        if condition is None:
            condition = self.prompt_embeds([prompt or ""])
        embeds = {"prompt_embeds": condition.expand(n, -1, -1) if condition.shape[0] == 1 else condition,
                  "negative_prompt_embeds": self.prompt_embeds([""]).expand(n, -1, -1)}
        latents = render(pipe, None, height, width, steps, guidance, ladder=tuple(ladder), generator=generator,
                         output_type="latent", **embeds)
        return Tokens(latents=latents.float(), meta={"layout": "continuous", "prompt": prompt})

    def nll(self, batch: dict[str, Any], *, seed: int = 0, **options: Any) -> tuple[Tensor, int]:
        """(summed per-item denoising MSE, items) on ``batch["latents"]`` (scaled VAE latents) with captions
        ``batch["txt"]`` (empty when absent): noise and timesteps drawn with ``seed``, the noise (or v) target of
        the pipeline's scheduler, the UNet running with LinFusion mounted (`attach_pipeline`)."""
        pipe = self.pipeline
        unet = pipe.unet
        latents = batch["latents"].to(unet.device, unet.dtype)
        captions = [c.decode() if isinstance(c, bytes) else str(c) for c in (batch.get("txt") or [""] * len(latents))]
        rng = torch.Generator(device=latents.device).manual_seed(int(seed))
        noise = torch.randn(latents.shape, generator=rng, device=latents.device, dtype=latents.dtype)
        steps = int(pipe.scheduler.config.num_train_timesteps)
        t = torch.randint(0, steps, (len(latents),), generator=rng, device=latents.device)
        with torch.no_grad():
            noisy = pipe.scheduler.add_noise(latents, noise, t)
            pred = unet(noisy, t, self.prompt_embeds(captions).to(unet.dtype)).sample
        target = noise_target(pipe.scheduler, latents, noise, t)
        per_item = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
        return per_item.double().sum(), len(latents)

    # ------------------------------------------------------------------ official folder layout
    def save_official(self, directory: str | os.PathLike) -> Path:
        """Write the released layout: ``config.json`` (``_class_name: LinFusion``) + flat safetensors."""
        from diffusers import __version__ as diffusers_version

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": "LinFusion", "_diffusers_version": diffusers_version, "modules_list": self.modules_list}
        (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        from tokenforge.hub import save_weights

        save_weights(state, out / WEIGHTS_NAME)  # group-readable, as save_pretrained's
        return out

    @classmethod
    def load_official(cls, directory: str | os.PathLike, chunk_size: int | None = None) -> LinFusion:
        """Load a released folder (e.g. Yuanshi/LinFusion-1-5); ``projection_mid_dim`` comes from its config."""
        from tokenforge.hub import CheckpointError, load_mapped_state_dict, read_state_dict

        folder = Path(directory)
        config_file, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not config_file.is_file() or not weights.is_file():
            raise CheckpointError(f"{folder} needs {CONFIG_NAME} and {WEIGHTS_NAME} (the released LinFusion layout)")
        config = json.loads(config_file.read_text())
        if "modules_list" not in config:
            raise CheckpointError(f"{config_file} has no 'modules_list'; it is not a LinFusion config")
        model = cls(config["modules_list"], chunk_size=chunk_size)
        load_mapped_state_dict(model, read_state_dict(weights, nested=()), source=str(weights))
        return model

    def extra_repr(self) -> str:
        return f"{len(self.modules_list)} modules"
