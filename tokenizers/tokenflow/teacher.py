"""The frozen distillation teacher of TokenFlow's semantic branch, loaded from a local path.

`load_teacher(path)` accepts
- a transformers folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``) of a CLIP model
  (``CLIPModel`` / ``CLIPVisionModelWithProjection``: features = ``post_layernorm`` patch tokens times
  ``visual_projection``, 512-d for ViT-B/16; input CLIP mean/std) or a SigLIP model (``SiglipModel`` /
  ``SiglipVisionModel``: ``hidden_states[-2]``; input (x-0.5)/0.5). Keys with or without ``vision_model.``;
  text-tower keys are ignored. The towers are tokenforge's own (`CLIPVisionTower`, `SiglipVisionTower`).
- an official TokenFlow tokenizer file (or fixture folder): its semantic encoder and scaling layer.
  (The clipb release has no CLIP projection, so its features are 768-d; the official teacher's are 512-d.)

`Teacher` wraps a tower and its input scaling; it is frozen and always in eval mode.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from tokenforge.hub import CheckpointError, load_checkpoint, load_mapped_state_dict
from tokenforge.tokenizers.tokenflow.towers import CLIPVisionTower, ScalingLayer, SiglipVisionTower


class Teacher(nn.Module):
    """Frozen ``tower`` behind an optional fixed input scaling; ``forward(x in [-1,1]) -> [B, N, D]``."""

    def __init__(self, tower: nn.Module, scaling: ScalingLayer | None, project: bool = False) -> None:
        super().__init__()
        self.tower, self.scaling, self.project = tower, scaling, project
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Teacher:  # noqa: ARG002 - a teacher never trains (no dropout, no stats)
        return super().train(False)

    @property
    def out_dim(self) -> int:
        if self.project:
            return int(self.tower.proj.shape[1])
        return int(self.tower.out_dim)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        x = self.scaling(x) if self.scaling is not None else x
        return self.tower(x, project=True) if self.project else self.tower(x)


def _weights(folder: Path) -> dict[str, Tensor]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return load_file(str(folder / name)) if name.endswith("safetensors") else dict(load_checkpoint(folder / name))
    raise FileNotFoundError(f"{folder} has no model.safetensors or pytorch_model.bin")


def _vision_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop text-tower keys and the optional ``vision_model.`` level."""
    out = {}
    for key, value in state.items():
        if key.startswith(("text_model.", "text_projection", "logit_scale", "logit_bias")):
            continue
        out[re.sub(r"^vision_model\.", "", key)] = value
    return out


def _hf_clip(folder: Path, config: dict) -> Teacher:
    vision = config.get("vision_config", config)
    state = _vision_state(_weights(folder))
    width, patch = int(vision.get("hidden_size", 768)), int(vision.get("patch_size", 32))
    rows = state["embeddings.position_embedding.weight"].shape[0] - 1
    proj = state.get("visual_projection.weight")
    tower = CLIPVisionTower(math.isqrt(rows) * patch, patch, width, int(vision.get("num_hidden_layers", 12)),
                            int(vision.get("num_attention_heads", width // 64)),
                            proj.shape[0] if proj is not None else None)
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.match(r"^encoder\.layers\.(\d+)\.(.*)$", key)
        if m:
            i, rest = m.groups()
            attn = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest)
            if attn:
                if attn.group(1) == "q":
                    mapped[f"blocks.{i}.attn.qkv.{attn.group(2)}"] = torch.cat(
                        [state[f"encoder.layers.{i}.self_attn.{n}_proj.{attn.group(2)}"] for n in "qkv"])
                continue
            rest = rest.replace("self_attn.out_proj.", "attn.proj.").replace("layer_norm1.", "norm1.")
            mapped[f"blocks.{i}.{rest.replace('layer_norm2.', 'norm2.')}"] = value
        elif key == "embeddings.class_embedding":
            mapped["class_embedding"] = value
        elif key == "embeddings.patch_embedding.weight":
            mapped["conv1.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            mapped["positional_embedding"] = value
        elif key.startswith("pre_layrnorm."):
            mapped["ln_pre." + key.split(".", 1)[1]] = value
        elif key.startswith("post_layernorm."):
            mapped["ln_post." + key.split(".", 1)[1]] = value
        elif key == "visual_projection.weight":
            mapped["proj"] = value.t().contiguous()
    load_mapped_state_dict(tower, mapped, ignore_unexpected=[r"position_ids$"], source=str(folder))
    return Teacher(tower, ScalingLayer("clip"), project=proj is not None)


def _hf_siglip(folder: Path, config: dict) -> Teacher:
    from tokenforge.tokenizers.tokenflow.official import key_map

    vision = config.get("vision_config", config)
    state = {"encoder_vqkd." + k: v for k, v in _vision_state(_weights(folder)).items() if not k.endswith("position_ids")}
    patch = int(vision.get("patch_size", 14))
    rows = state["encoder_vqkd.embeddings.position_embedding.weight"].shape[0]
    tower = SiglipVisionTower(
        math.isqrt(rows) * patch, patch, int(vision.get("hidden_size", 1152)), int(vision.get("num_hidden_layers", 27)),
        int(vision.get("num_attention_heads", 16)), int(vision.get("intermediate_size", 4304)),
        float(vision.get("layer_norm_eps", 1e-6)), use_head=any(".head." in k for k in state),
    )
    rename = key_map("siglip")
    mapped = {rename(k)[len("semantic_encoder."):]: v for k, v in state.items()}
    load_mapped_state_dict(tower, mapped, source=str(folder))
    return Teacher(tower, ScalingLayer("siglip"))


def load_teacher(path: str | Path) -> Teacher:
    """A frozen `Teacher` from a transformers CLIP/SigLIP folder or an official TokenFlow file/folder."""
    path = Path(path).expanduser()
    config_file = path / "config.json"
    if path.is_dir() and config_file.is_file():
        config = json.loads(config_file.read_text())
        model_type = str(config.get("model_type", ""))
        if model_type.startswith("clip"):
            return _hf_clip(path, config)
        if model_type.startswith("siglip"):
            return _hf_siglip(path, config)
    if path.exists():
        from tokenforge.tokenizers.tokenflow.official import load_tokenflow

        try:
            model = load_tokenflow(path)
        except (CheckpointError, FileNotFoundError) as error:
            raise CheckpointError(f"{path} is neither a transformers CLIP/SigLIP folder nor an official TokenFlow "
                                  f"tokenizer: {error}") from None
        return Teacher(model.semantic_encoder, model.scaling_layer)
    raise FileNotFoundError(f"no teacher at {path}: give a transformers CLIP/SigLIP folder or a TokenFlow .pt file")
