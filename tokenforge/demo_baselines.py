"""The demo's baseline stages: a trivial predictor scored beside every held-out quality number.

Images: the mean training image (PSNR / SSIM of predicting it); audio: silence (mel / STFT distance of zeros);
meshes: the best training-set sphere (IoU / Chamfer / F-score); token generators: the unigram entropy of the
training tokens (computed by the encode stage); E-CAR: the flow loss of predicting zero velocity; LinFusion:
the teacher's mean sample for every prompt (in its generate stage). Each stage uses `tokenforge.baselines`,
which scores through `tokenforge.evaluate` with the same protocol as the models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokenforge.demo_stages import Run, headline

Stage = tuple[str, Callable[[Run], Any], tuple[str, ...]]

IMAGE_SIZE = {"vqgan": 32, "tokenflow": 32, "flextok": 16, "klvae": 32}
NAMES = {"image": "mean training image", "audio": "silence", "mesh": "best training-set sphere",
         "tokens": "unigram entropy of the training tokens", "flow": "zero velocity (untrained)",
         "linfusion": "teacher's mean sample for every prompt"}


def baseline_stage(method: str) -> list[Stage]:
    """``[(method/baseline, fn, needs)]`` for a method whose quality number has a trivial baseline, else ``[]``."""
    from tokenforge import baselines

    if method in IMAGE_SIZE:
        def image(run: Run) -> dict[str, Any]:
            size = IMAGE_SIZE[method]
            metrics = baselines.image_baseline(run.result("data/photos")["shards"],
                                               run.path("baselines", f"images_{size}px"), size)
            return {"baseline": NAMES["image"], "metrics": headline(metrics)}
        return [(f"{method}/baseline", image, ("data/photos",))]
    if method == "wavtokenizer":
        def audio(run: Run) -> dict[str, Any]:
            metrics = baselines.silence_baseline(run.result("data/speech")["shards"], run.path("baselines", "silence"))
            return {"baseline": NAMES["audio"], "metrics": headline(metrics)}
        return [("wavtokenizer/baseline", audio, ("data/speech",))]
    if method == "vat":
        def mesh(run: Run) -> dict[str, Any]:
            metrics = baselines.sphere_baseline(run.result("data/meshes")["shards"], run.path("baselines", "sphere"),
                                                resolution=32)
            return {"baseline": f"{NAMES['mesh']} (radius {metrics['radius']})", "metrics": headline(metrics)}
        return [("vat/baseline", mesh, ("data/meshes",))]
    if method in ("gpt", "enat"):
        def tokens(run: Run) -> dict[str, Any]:
            found = run.result("encode/vqgan")
            return {"baseline": NAMES["tokens"], "metrics": {"nll_nats_per_token": found["unigram_entropy_nats"]}}
        return [(f"{method}/baseline", tokens, ("encode/vqgan",))]
    if method == "ecar":
        def flow(run: Run) -> dict[str, Any]:
            metrics = baselines.zero_prediction_loss(run.result("ecar/fit")["checkpoint"],
                                                     run.result("encode/klvae")["tokens"],
                                                     run.path("baselines", "zero_velocity"), device=run.device)
            return {"baseline": NAMES["flow"], "metrics": headline(metrics)}
        return [("ecar/baseline", flow, ("ecar/fit",))]
    return []
