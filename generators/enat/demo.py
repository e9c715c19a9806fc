"""ENAT's part of `tokenforge demo`: learns VQGAN's token grids of the labelled faces; its paper claim (reusing
the previous step's features cuts each step's compute at equal quality) measured with its bench and the fitted
model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenforge.demo_claims import bench_json
from tokenforge.demo_stages import DemoPart, Run, encode_stage, token_generator, token_histogram

EXPECT = "Generated from a model trained for seconds on VQGAN tokens of 32 px faces: expect textures, not faces."


def claim(run: Run) -> dict[str, Any]:
    """Reuse vs no reuse: images/s and GFLOPs per image (bench, tiny random ENAT), and samples of the fitted
    ENAT drawn both ways with the same noise: token-frequency distance to the held-out tokens."""
    rows = bench_json(["generator", "enat", "--size", "tiny", "--batch", "8", "--dtypes", "fp32", "--warmup", "1",
                       "--repeats", "3", "--device", "cpu"])
    by = {r["mode"]: r for r in rows}
    compact = [{"mode": r["mode"], "images_per_s": round(r["images_per_s"], 1),
                "gflops_per_image": round(r["gflops_per_image"], 4)} for r in rows]
    quality = sample_quality(run) if run.results.get("enat/fit", {}).get("status") == "ok" else {}
    verdict = (f"reuse: {by['no-reuse']['gflops_per_image'] / by['reuse']['gflops_per_image']:.2f}x fewer FLOPs and "
               f"{by['reuse']['images_per_s'] / by['no-reuse']['images_per_s']:.2f}x the speed of no reuse; "
               f"{by['maskgit']['gflops_per_image'] / by['reuse']['gflops_per_image']:.2f}x fewer FLOPs than "
               f"MaskGIT-style full passes")
    if quality:
        verdict += (f"; fitted model, token-frequency distance to held-out tokens: reuse "
                    f"{quality['reuse_tv']:.3f}, no reuse {quality['no_reuse_tv']:.3f} "
                    f"({quality['agreement']:.0%} of sampled tokens identical)")
    return {"claim": "ENAT: reusing the previous step's features cuts the compute of each sampling step at "
                     "equal quality", "rows": compact, "quality": quality, "verdict": verdict}


def sample_quality(run: Run, n: int = 32) -> dict[str, float]:
    """Total-variation distance of the token frequencies sampled with and without reuse to the held-out ones."""
    import torch

    from tokenforge.generators.enat.sampler import enat_generate
    from tokenforge.hub import from_pretrained

    model = from_pretrained(run.result("enat/fit")["checkpoint"]).eval()
    labels = torch.arange(n) % model.num_classes
    samples = {}
    with torch.no_grad():
        for reuse in (True, False):
            generator = torch.Generator().manual_seed(0)
            samples[reuse] = enat_generate(model, n, labels, steps=6, reuse=reuse, generator=generator).ids
    held_out = token_histogram(Path(run.result("encode/vqgan")["tokens"]), "val", model.codebook_size)

    def tv(ids: Any) -> float:
        counts = torch.bincount(ids.flatten(), minlength=len(held_out)).double()[:len(held_out)]
        return float(0.5 * (counts / counts.sum() - held_out).abs().sum())

    return {"reuse_tv": round(tv(samples[True]), 4), "no_reuse_tv": round(tv(samples[False]), 4),
            "agreement": round(float((samples[True] == samples[False]).float().mean()), 4), "samples": n}


def part() -> DemoPart:
    return token_generator("enat", "generators/enat", "image tokens", {"default": 300, "long": 3000},
                           encode_stage("vqgan", 32), options=("--steps", "6"), requires=("vqgan",),
                           claim=(("enat/claim", claim, ()),), claim_title="reuse vs no reuse", expect=EXPECT)
