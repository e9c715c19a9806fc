"""VAT's reconstruct hook (`Method.verbs["reconstruct"]`, see method.py): a compactness report per shape.

    tokenforge reconstruct --model DIR|CKPT mesh.obj ... --out DIR [--scales K|K1,K2|all] [--resolution 128]

For each mesh: load + repair + normalise as the mesh shards do and sample surface points with face normals
(`tokenforge.mesh_files`, as the generic mesh path does), encode to per-scale ids, decode (all scales, or only
the first K of ``--scales K|K1,K2|all``: one reconstruction per K, coarse-to-fine), extract the mesh on a ``--resolution`` grid and write ``NAME.ply``
(``NAME.kK.ply`` when several K; ``--format glb`` for GLB), ``NAME.tokens.npz`` (ids per scale), ``NAME.png``
(input | reconstruction at the largest K) and entries of ``metrics.json``: bytes per shape (ids packed at
ceil(log2 V) bits), Chamfer, F-score at 0.01/0.02/0.05, volume IoU on uniform points, watertightness (a K
whose field is empty is recorded with ``empty`` = the reason, F-score 0 and no Chamfer).
``summary.md`` / ``summary.json``: the per-K means over the shapes (the coarse-to-fine table). Malformed
meshes are skipped with one line (the loader's reason) and the run continues (exit code 3 if any was skipped,
`tokenforge.errors.exit_code_for`). Memory is bounded whatever ``--eval-points``: the ground-truth inside test
(`tokenforge.metrics.mesh.contains`), the predicted occupancy and the nearest-point queries all run in chunks
of points (peak on the bundled 19,536-face camel with 100k evaluation points: see docs/methods/vat.md).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenforge.data.shards import Rejected
from tokenforge.errors import UsageError, exit_code_for
from tokenforge.mesh_files import encoder_input, field_to_mesh, load_surface, occupancy_in_chunks
from tokenforge.methods import VerbRequest
from tokenforge.metrics.mesh import chamfer_distance, contains, f_score, occupancy_iou
from tokenforge.tokenizers.vat.model import VAT
from tokenforge.tokenizers.vat.preview import render_pair

TAUS = (0.01, 0.02, 0.05)


def packed_bytes(tokens_per_scale: list[int], vocab_size: int) -> int:
    """Bytes of all ids packed at ceil(log2 V) bits each."""
    return math.ceil(sum(tokens_per_scale) * max(1, math.ceil(math.log2(vocab_size))) / 8)


def parse_scales(text: str | None, total: int) -> list[int]:
    """``None`` -> [S]; ``"all"`` -> 1..S; ``"3"`` -> [3]; ``"1,2,4"`` -> [1, 2, 4] (each in 1..S)."""
    if text is None:
        return [total]
    ks = list(range(1, total + 1)) if text == "all" else [int(k) for k in str(text).split(",") if k.strip()]
    bad = [k for k in ks if not 1 <= k <= total]
    if not ks or bad:
        raise ValueError(f"--scales {text!r}: each K must be in 1..{total} (this VAT has {total} scales), or 'all'")
    return sorted(set(ks))


@torch.no_grad()
def reconstruct_one(model: VAT, path: Path, out: Path, num_points: int, resolution: int,
                    scales: int | list[int] | None, device: str, eval_points: int = 100_000, fmt: str = "ply",
                    largest_component: bool = False) -> list[dict[str, Any]]:
    """One mesh -> one entry per number of scales kept (coarse-to-fine prefixes of the same encoding)."""
    import trimesh

    mesh, x = load_surface(path, num_points)
    tokens = model.encode(encoder_input(model, x.to(device)))
    total = len(tokens.ids)
    ks = [total] if scales is None else [scales] if isinstance(scales, int) else list(scales)
    stem = path.stem
    np.savez(out / f"{stem}.tokens.npz", **{f"scale_{i}": t[0].cpu().numpy() for i, t in enumerate(tokens.ids)})
    rng = np.random.default_rng(0)
    gt_pts = trimesh.sample.sample_surface(mesh, eval_points, seed=rng)[0]
    uniform = rng.uniform(-1, 1, size=(eval_points, 3)).astype(np.float32)
    gt_occ = torch.from_numpy(contains(mesh, uniform))[None]
    entries = []
    for k in ks:
        ids = tokens.ids[:k]
        planes = model.decode(ids)
        counts = [int(t.shape[1]) for t in ids]
        pred_occ = occupancy_in_chunks(model, planes, torch.from_numpy(uniform)).cpu()[None] >= 0
        name = stem if len(ks) == 1 else f"{stem}.k{k}"
        entry = {"file": path.name, "scales_kept": len(ids), "tokens": sum(counts), "tokens_per_scale": counts,
                 "bytes": packed_bytes(counts, model.vocab_size), "vocab_size": model.vocab_size,
                 "iou": float(occupancy_iou(pred_occ, gt_occ)[0])}
        try:
            rec = field_to_mesh(model, planes, resolution, largest_component)
        except ValueError as error:  # an empty/full field at this K is a result (F = 0), not a crash
            entries.append({**entry, "mesh": None, "empty": str(error), "chamfer": None,
                            "f_score": {str(t): 0.0 for t in TAUS}, "watertight": False, "components": 0})
            continue
        rec.export(out / f"{name}.{fmt}")
        rec_pts = trimesh.sample.sample_surface(rec, eval_points, seed=np.random.default_rng(1))[0]
        if k == ks[-1]:
            render_pair(mesh, rec, out / f"{stem}.png")
        entries.append({**entry, "mesh": f"{name}.{fmt}", "chamfer": chamfer_distance(rec_pts, gt_pts),
                        "f_score": dict(zip(map(str, TAUS), f_score(rec_pts, gt_pts, TAUS))),
                        "watertight": bool(rec.is_watertight), "components": len(rec.split(only_watertight=False))})
    return entries


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean F-score/IoU/Chamfer and bytes per shape for each number of scales kept (refused files left out).

    A K whose decoded field is empty counts F = 0 and its IoU; Chamfer (undefined) averages the non-empty ones
    and ``empty`` says how many were left out of it.
    """
    rows = []
    for k in sorted({r["scales_kept"] for r in results if "error" not in r}):
        group = [r for r in results if r.get("scales_kept") == k]
        row = {"scales_kept": k, "shapes": len(group), "tokens": group[0]["tokens"],
               "bytes_per_shape": group[0]["bytes"]}
        for tau in TAUS:
            row[f"f_score@{tau}"] = round(float(np.mean([r["f_score"][str(tau)] for r in group])), 4)
        chamfers = [r["chamfer"] for r in group if r["chamfer"] is not None]
        row["chamfer"] = round(float(np.mean(chamfers)), 5) if chamfers else None
        row["iou"] = round(float(np.mean([r["iou"] for r in group])), 4)
        row["watertight"] = sum(r["watertight"] for r in group)
        row["empty"] = sum(r["chamfer"] is None for r in group)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no shape was reconstructed)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def reconstruct_verb(request: VerbRequest) -> int:
    """`tokenforge reconstruct` for a VAT (`tokenforge.methods.Method.verbs`): meshes, tokens, previews, metrics."""
    options, args = request.options, request.args
    model = request.model
    if options["eval_points"] < 1:
        raise UsageError("--eval-points must be >= 1")
    try:
        ks = parse_scales(options["scales"], len(model.scales))
    except ValueError as error:
        raise UsageError(str(error)) from None
    request.out.mkdir(parents=True, exist_ok=True)
    results, failed = [], 0
    for path in request.inputs:
        try:
            entries = reconstruct_one(model, path, request.out, args.points, args.resolution,
                                      ks if options["scales"] else None, request.device, options["eval_points"],
                                      options["format"], options["largest_component"])
            results += entries
            for entry in entries:
                print(json.dumps(entry))
        except Exception as error:  # one refused mesh must not stop the others; its reason is reported
            failed += 1
            reason = str(error) if isinstance(error, Rejected) else f"{type(error).__name__}: {error}"
            results.append({"file": path.name, "error": reason})
            print(f"skipped: {path.name}: {reason}", file=sys.stderr)  # one line per skipped file
    (request.out / "metrics.json").write_text(json.dumps(results, indent=1))
    table = summarise(results)
    (request.out / "summary.json").write_text(json.dumps(table, indent=1))
    (request.out / "summary.md").write_text(markdown_table(table))
    print(markdown_table(table), end="")
    return exit_code_for(failed, len(request.inputs))
