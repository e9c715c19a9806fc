"""Trivial baselines that a trained model's held-out numbers must beat, scored by `tokenforge.evaluate` itself.

Each baseline is a tiny stand-in "tokenizer" (0 bytes per item: its output does not depend on the input) that
`evaluate_tokenizer` scores with exactly the protocol of the real models, so the numbers sit side by side:

- `MeanImage`: predicts the mean training image (same size and crop as the evaluation) for every input.
- `Silence`: predicts all-zero audio of the input's length (mel / STFT distance of silence).
- `Sphere`: predicts one sphere centred in the normalised box, its radius fitted for IoU on the training
  shapes (meshes are normalised to a centred bounding box, so this is the shape-agnostic guess).

`zero_prediction_loss` gives the flow loss of a continuous generator that always predicts zero velocity;
`unigram_entropy` (in `tokenforge.demo_stages.token_statistics`) is the token generators' baseline.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tokenforge.evaluate import batches, evaluate_tokenizer


class _Constant(nn.Module):
    """An input-independent predictor: encodes to zero token values, so evaluate counts 0 bytes per item."""

    vocab_size = 0

    def encode(self, x: Tensor) -> Any:
        from tokenforge.tokenizers.base import Tokens

        return Tokens(latents=x.new_zeros(len(x), 0), meta={"shape": tuple(x.shape)})


class MeanImage(_Constant):
    """Predicts ``mean`` (``[3, H, W]`` in [-1, 1]) for every image."""

    modality = "image"

    def __init__(self, mean: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)

    def decode(self, tokens: Any) -> Tensor:
        return self.mean.expand(tokens.meta["shape"][0], *self.mean.shape)


class Silence(_Constant):
    """Predicts zeros of the input's length."""

    modality = "audio"

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate

    def decode(self, tokens: Any) -> Tensor:
        return torch.zeros(tokens.meta["shape"])


class Sphere(_Constant):
    """Occupancy of one sphere of ``radius`` at the origin, as logits (positive inside)."""

    modality = "mesh"
    use_normals = False

    def __init__(self, radius: float) -> None:
        super().__init__()
        self.radius = float(radius)

    def decode(self, tokens: Any) -> Tensor:
        return torch.zeros(tokens.meta["shape"][0], 1)

    def occupancy(self, planes: Tensor, queries: Tensor) -> Tensor:
        return (self.radius - queries.norm(dim=-1)) * 10.0


def mean_image(shards: str | Path, size: int, split: str = "train") -> Tensor:
    """Pixel-wise mean of ``split``'s images after the evaluation's centre crop to ``size``."""
    total, count = None, 0
    for batch in batches(shards, split, "image", 16, image_size=size, random_crop=False, hflip=False):
        images = batch["image"].float()
        total = images.sum(0) if total is None else total + images.sum(0)
        count += len(images)
    if not count:
        raise ValueError(f"split {split!r} of {shards} has no images to average")
    return total / count


def sphere_radius(shards: str | Path, split: str = "train", num_queries: int = 2048) -> float:
    """The radius (0.05 steps) whose sphere has the best mean occupancy IoU on ``split``'s stored queries."""
    from tokenforge.metrics.mesh import occupancy_iou

    radii = torch.arange(0.05, 1.0001, 0.05)
    scores = torch.zeros(len(radii))
    for batch in batches(shards, split, "mesh", 8, num_points=256, num_queries=num_queries):
        inside = batch["occupancy"] > 0.5
        for i, radius in enumerate(radii):
            predicted = batch["queries"].norm(dim=-1) <= radius
            scores[i] += float(sum(occupancy_iou(predicted, inside)))
    return round(float(radii[int(scores.argmax())]), 2)


def image_baseline(shards: str | Path, out: str | Path, size: int) -> dict[str, Any]:
    """Held-out PSNR / SSIM of predicting the mean training image (evaluate's protocol, ``metrics.json``)."""
    return evaluate_tokenizer(MeanImage(mean_image(shards, size)), shards, out, image_size=size, progress=False)


def silence_baseline(shards: str | Path, out: str | Path, sample_rate: int = 24000) -> dict[str, Any]:
    """Held-out mel / STFT distance (and PESQ / STOI where defined) of predicting silence."""
    return evaluate_tokenizer(Silence(sample_rate), shards, out, progress=False)


def sphere_baseline(shards: str | Path, out: str | Path, **opts: Any) -> dict[str, Any]:
    """Held-out IoU / Chamfer / F-score of the best training-set sphere; ``opts`` as for `evaluate_tokenizer`."""
    radius = sphere_radius(shards)
    metrics = evaluate_tokenizer(Sphere(radius), shards, out, progress=False, **opts)
    metrics["radius"] = radius
    return metrics


def zero_prediction_loss(model: nn.Module | str, shards: str | Path, out: str | Path, **opts: Any) -> dict[str, Any]:
    """Held-out flow loss of ``model`` with its velocity prediction replaced by zeros (same noise, same seed):
    what the loss reads before the network has learnt anything."""
    from tokenforge.evaluate import evaluate_generator, load_model

    zero = copy.deepcopy(load_model(model, opts.get("device", "cpu")))
    if not hasattr(zero, "velocity"):
        raise TypeError(f"{type(zero).__name__} has no velocity(): zero_prediction_loss is for flow generators")
    zero.velocity = lambda x, *args, **kwargs: torch.zeros_like(x)
    return evaluate_generator(zero, shards, out, progress=False, **opts)
