"""VAT's part of `tokenforge demo`: fitted on the meshes, three held-out meshes reconstructed from every number of
scales; its paper claim (a few bytes give a coarse shape, more bytes add detail) read off those."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenforge.demo_stages import DemoPart, Run, mesh_tokenizer


def summarise(out: Path) -> dict[str, Any]:
    """The reconstruct stage's pictures and the mean metrics over the shapes at the most scales kept."""
    import numpy as np

    entries = json.loads((out / "metrics.json").read_text())  # one entry per mesh and number of scales kept
    kept = max((entry["scales_kept"] for entry in entries if "error" not in entry), default=0)
    per_shape = [entry for entry in entries if "error" not in entry and entry["scales_kept"] == kept]
    if not per_shape:
        raise RuntimeError("; ".join(f"{e['file']}: {e['error']}" for e in entries))
    means = {key: float(np.mean([entry[key] for entry in per_shape])) for key in ("iou", "bytes")}
    meshed = [entry["chamfer"] for entry in per_shape if entry.get("chamfer") is not None]
    means["chamfer"] = float(np.mean(meshed)) if meshed else float("nan")  # over shapes that gave a surface
    for tau in per_shape[0]["f_score"]:
        means[f"f_score@{tau}"] = float(np.mean([entry["f_score"][tau] for entry in per_shape]))
    return {"pictures": sorted(str(p) for p in out.glob("*.png")),
            "metrics": {k: round(v, 4) for k, v in means.items()},
            "empty_shapes": sum(entry.get("chamfer") is None for entry in per_shape)}


def claim(run: Run) -> dict[str, Any]:
    """F-score and IoU against bytes per shape for each number of scales kept (coarse-to-fine prefixes)."""
    table = json.loads((Path(run.result("vat/reconstruct")["out"]) / "summary.json").read_text())
    tau = max((key for key in table[-1] if key.startswith("f_score@")), key=lambda key: float(key.split("@")[1]))
    rows = [{"scales": r["scales_kept"], "bytes": r["bytes_per_shape"], "f_score": r[tau], "iou": r["iou"]}
            for r in table]
    verdict = (f"{rows[0]['bytes']} -> {rows[-1]['bytes']} bytes/shape: {tau} {rows[0]['f_score']:.3f} -> "
               f"{rows[-1]['f_score']:.3f}, IoU {rows[0]['iou']:.3f} -> {rows[-1]['iou']:.3f}")
    return {"claim": "VAT: coarse-to-fine scales, so a few bytes give a coarse shape and more bytes add detail",
            "rows": rows, "tau": tau, "verdict": verdict}


def part() -> DemoPart:
    return mesh_tokenizer("vat", "tokenizers/vat", {"default": 500, "long": 2000}, summarise,
                          options=("--points", "512", "--eval-points", "5000", "--scales", "all"),
                          fit_extra=("--data.init_args.num_points", "512", "--data.init_args.num_queries", "512"),
                          claim=(("vat/claim", claim, ("vat/reconstruct",)),), claim_title="F-score vs bytes per scale")
