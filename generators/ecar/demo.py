"""E-CAR's part of `tokenforge demo`: learns the KL autoencoder's latents of the labelled faces; its paper claim
(DiT-level generation at a fraction of the FLOPs) measured with its bench against a DiT of the same size."""

from __future__ import annotations

from typing import Any

from tokenforge.demo_claims import bench_json
from tokenforge.demo_stages import DemoPart, Run, encode_stage, flow_baseline, token_generator

EXPECT = "Generated from a model trained for seconds on KL latents of 16 px faces: expect colour blobs, not faces."


def claim(run: Run) -> dict[str, Any]:
    """GFLOPs and time per generated image, E-CAR against a DiT of the same width and depth (bench, tiny)."""
    data = bench_json(["generator", "ecar", "--size", "tiny", "--batch", "1", "--dtype", "fp32", "--warmup", "1",
                       "--repeats", "3", "--device", "cpu"])
    by = {r["model"]: r for r in data["rows"]}
    rows = [{"model": name, "params_m": round(data["params"][name] / 1e6, 3),
             "gflops_per_image": round(data["gflops"][name], 4), "ms_per_image": round(by[name]["ms_per_image"], 1)}
            for name in ("ecar", "dit")]
    verdict = (f"E-CAR {data['gflops']['dit'] / data['gflops']['ecar']:.1f}x fewer FLOPs and "
               f"{by['dit']['seconds'] / by['ecar']['seconds']:.1f}x faster per image than the DiT "
               f"({rows[0]['params_m']} M vs {rows[1]['params_m']} M parameters)")
    return {"claim": "E-CAR: DiT-level generation at ~10x fewer FLOPs and ~5x faster (256 px; here a tiny pair "
                     "of random-weight models on 8x8 latents)", "rows": rows, "verdict": verdict}


def part() -> DemoPart:
    # tiny E-CAR's last scale is 8x8: 16 px faces through the x2 KL autoencoder
    return token_generator("ecar", "generators/ecar", "image latents", {"default": 300, "long": 3000},
                           encode_stage("klvae", 16, latents=True), options=("--steps", "4", "--cfg", "1.5"),
                           baseline=flow_baseline, requires=("klvae",), claim=(("ecar/claim", claim, ()),),
                           claim_title="FLOPs and time vs DiT", expect=EXPECT)
