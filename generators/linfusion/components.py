"""The frozen diffusers parts around LinFusion: base UNet, VAE, text encoder (+ tokenizer) and DDPM scheduler.

Either a local diffusers pipeline folder (SD-1.5 / SD-2.1 layout: ``unet/ vae/ text_encoder/ tokenizer/
scheduler/``; fully offline) or, for CI, tiny random components from small config dicts (seeded), whose
"tokenizer" maps UTF-8 bytes to ids (no vocabulary files needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


class ByteTokenizer:
    """Captions -> ids: BOS, UTF-8 bytes + 3, EOS, padded with EOS to ``max_length`` (CLIP-like layout)."""

    bos, eos = 1, 2

    def __init__(self, max_length: int) -> None:
        self.model_max_length = max_length

    def __call__(self, texts: list[str]) -> Tensor:
        ids = torch.full((len(texts), self.model_max_length), self.eos, dtype=torch.long)
        for row, text in enumerate(texts):
            body = [b + 3 for b in text.encode("utf-8")][: self.model_max_length - 2]
            ids[row, : len(body) + 2] = torch.tensor([self.bos, *body, self.eos])
        return ids


def encode_text(tokenizer: Any, text_encoder: nn.Module, captions: list[str], device: torch.device) -> Tensor:
    """Last hidden state of ``text_encoder`` for ``captions``; no ``tokenizer`` (a pipeline saved without one, as
    the tiny ones are) means `ByteTokenizer` at the encoder's position count."""
    if tokenizer is None:
        tokenizer = ByteTokenizer(int(text_encoder.config.max_position_embeddings))
    if isinstance(tokenizer, ByteTokenizer):
        ids = tokenizer(captions)
    else:
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
    return text_encoder(ids.to(device))[0]


@dataclass
class Components:
    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    scheduler: Any

    def encode_text(self, captions: list[str], device: torch.device) -> Tensor:
        """Last hidden state of the text encoder for captions tokenized to the tokenizer's max length."""
        return encode_text(self.tokenizer, self.text_encoder, captions, device)

    def freeze(self) -> Components:
        for part in (self.unet, self.vae, self.text_encoder):
            part.requires_grad_(False).eval()
        return self


def load_components(base: str) -> Components:
    """A local diffusers Stable Diffusion folder (no network: ``local_files_only``)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"local_files_only": True}
    return Components(
        unet=UNet2DConditionModel.from_pretrained(base, subfolder="unet", **kw),
        vae=AutoencoderKL.from_pretrained(base, subfolder="vae", **kw),
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder", **kw),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", **kw),
        scheduler=DDPMScheduler.from_pretrained(base, subfolder="scheduler", **kw),
    )


def tiny_components(unet: dict, vae: dict, text: dict, scheduler: dict, seed: int = 0) -> Components:
    """Random components from config dicts (diffusers / transformers field names), seeded."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text = dict(text)
    max_length = text.setdefault("max_position_embeddings", 16)
    return Components(
        unet=UNet2DConditionModel(**unet),
        vae=AutoencoderKL(**vae),
        text_encoder=CLIPTextModel(CLIPTextConfig(**{"vocab_size": 259, "bos_token_id": 1, "eos_token_id": 2,
                                                     "pad_token_id": 2, **text})),
        tokenizer=ByteTokenizer(max_length),
        scheduler=DDPMScheduler(**scheduler),
    )
