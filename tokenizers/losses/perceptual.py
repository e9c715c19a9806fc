"""LPIPS perceptual distance (VGG16 trunk + learned linear heads), loaded from LOCAL weight files.

Nothing is downloaded: ``vgg_weights`` is torchvision's ``vgg16-397923af.pth`` (keys ``features.{i}.*``) or
a full LPIPS state dict (keys ``net.slice{k}.{i}.*``); ``lin_weights`` is the lpips package's ``weights/v0.1/
vgg.pth`` (keys ``lin{k}.model.1.weight``), or it can sit in the same file as the trunk (taming's
``vgg_lpips``, LlamaGen's LPIPS module state with ``scaling_layer.shift/scale``, which are then used). Layer
widths are read off the weights, so a VGG16 of reduced widths (the ``llamagen_vq_train`` fixture's) loads too.
Without paths the files are looked up in ``$TOKENFORGE_HOME/lpips/{vgg16.pth,vgg.pth}``; when they are missing
the constructor says which file to put where. A tokenizer trained without LPIPS weights
simply runs without the perceptual term (`TokenizerModule` logs that).

The maths is LPIPS v0.1: inputs in [-1,1] shifted/scaled per channel, VGG16 activations at relu1_2, relu2_2,
relu3_3, relu4_3, relu5_3, each unit-normalised over channels (eps 1e-10), squared difference, 1x1 linear
head without bias, spatial mean, summed over the five layers. The network is frozen: its tensors are
non-persistent buffers, so they move with the module but never enter optimisers or checkpoints.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.hub import load_checkpoint

log = logging.getLogger(__name__)

# torchvision vgg16 "features" indices of the 13 convs, and the conv index after whose ReLU each tap is taken
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
POOL_AFTER = (2, 7, 14, 21)  # a 2x2 max-pool follows these convs (before the next tap's block)
TAPS = (2, 7, 14, 21, 28)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def _read(path: str | os.PathLike) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weight file {path} does not exist")
    state = load_file(str(path)) if path.suffix == ".safetensors" else load_checkpoint(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {re.sub(r"^(module\.|perceptual_loss\.)", "", k): v for k, v in state.items() if isinstance(v, Tensor)}


def trunk_widths(state: dict[str, Tensor], source: str) -> list[int]:
    """Output widths of the 13 VGG16 convs, read off the weights (``features.{i}.weight`` keys): VGG16's
    64 ... 512, or the reduced widths of a test trunk. Each conv's input must be the previous one's output."""
    widths, previous = [], 3
    for i in VGG16_CONVS:
        key = f"features.{i}.weight"
        if key not in state or f"features.{i}.bias" not in state:
            raise KeyError(f"{source} has no {key} / bias; expected torchvision vgg16 or LPIPS trunk keys")
        shape = tuple(state[key].shape)
        if len(shape) != 4 or shape[1] != previous or shape[2:] != (3, 3):
            raise ValueError(f"{source}: {key} has shape {shape}; a VGG16 conv here is (out, {previous}, 3, 3)")
        widths.append(shape[0])
        previous = shape[0]
    return widths


def _default(name: str) -> Path:
    home = Path(os.environ.get("TOKENFORGE_HOME", Path.home() / ".cache" / "tokenforge")).expanduser()
    return home / "lpips" / name


class LPIPS(Configurable, nn.Module):
    """``forward(x, y)`` -> per-image perceptual distance ``[B]`` for images in [-1,1]."""

    def __init__(self, vgg_weights: str | None = None, lin_weights: str | None = None) -> None:
        super().__init__()
        trunk_path = Path(vgg_weights) if vgg_weights else _default("vgg16.pth")
        if not trunk_path.is_file():
            raise FileNotFoundError(
                f"LPIPS needs the VGG16 trunk weights and none were found at {trunk_path}. Put torchvision's "
                f"vgg16-397923af.pth there (or pass vgg_weights=PATH), and the lpips package's weights/v0.1/vgg.pth "
                f"as {_default('vgg.pth')} (or lin_weights=PATH). To train without a perceptual term, leave the "
                "module's `perceptual` argument empty."
            )
        state = _read(trunk_path)
        state = {re.sub(r"^net\.slice\d+\.(\d+)\.", r"features.\1.", k): v for k, v in state.items()}
        lin_state = state if any(k.startswith("lin0.") for k in state) else _read(lin_weights or _default("vgg.pth"))
        self.widths = trunk_widths(state, str(trunk_path))
        for n, i in enumerate(VGG16_CONVS):
            for part in ("weight", "bias"):
                self.register_buffer(f"conv{n}_{part}", state[f"features.{i}.{part}"].float().clone(), persistent=False)
        for k, n in enumerate(VGG16_CONVS.index(t) for t in TAPS):
            key, width = f"lin{k}.model.1.weight", self.widths[n]
            if key not in lin_state or tuple(lin_state[key].shape) != (1, width, 1, 1):
                found = tuple(lin_state[key].shape) if key in lin_state else "missing"
                raise KeyError(f"LPIPS linear head {key} of shape (1, {width}, 1, 1) (the trunk's width at tap {k}) "
                               f"not found in the lin weights ({found})")
            self.register_buffer(f"lin{k}", lin_state[key].float().clone(), persistent=False)
        shift, scale = state.get("scaling_layer.shift"), state.get("scaling_layer.scale")  # an LPIPS state has them
        shift = torch.tensor(SHIFT) if shift is None else shift.float().flatten()
        scale = torch.tensor(SCALE) if scale is None else scale.float().flatten()
        self.register_buffer("shift", shift.view(1, 3, 1, 1).clone(), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1).clone(), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:  # always frozen: no dropout, no updates
        return super().train(False)

    def features(self, x: Tensor) -> list[Tensor]:
        """The five VGG16 taps (relu1_2 ... relu5_3) of an image in [-1,1]."""
        h = (x - self.shift) / self.scale
        taps = []
        for n, i in enumerate(VGG16_CONVS):
            h = F.relu(F.conv2d(h, getattr(self, f"conv{n}_weight"), getattr(self, f"conv{n}_bias"), padding=1))
            if i in TAPS:
                taps.append(h)
            if i in POOL_AFTER:
                h = F.max_pool2d(h, 2, 2)
        return taps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS compares two [B, 3, H, W] images of one shape, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        total = x.new_zeros(x.shape[0])
        for k, (a, b) in enumerate(zip(self.features(x), self.features(y))):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + F.conv2d((a - b).pow(2), getattr(self, f"lin{k}")).mean(dim=(1, 2, 3))
        return total
