"""``tokenforge vat reconstruct --model DIR|CKPT mesh.obj ... --out DIR``: VAT's compactness report per shape.

For each mesh: load + repair + normalise as the mesh shards do (`tokenforge.data.mesh`), sample surface points
with face normals, encode to per-scale ids, decode (optionally only the first ``--scales`` scales), extract the
mesh on a ``--resolution`` grid and write ``NAME.ply``, ``NAME.tokens.npz`` (ids per scale), ``NAME.png``
(input | reconstruction preview) and an entry of ``metrics.json``: bytes per shape (ids packed at
ceil(log2 V) bits), Chamfer, F-score at 0.01/0.02/0.05, volume IoU on uniform points. Malformed meshes are
refused with the loader's reason and the run continues (exit code 1 if any failed).
"""

from __future__ import annotations

import argparse
import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenforge.metrics.mesh import chamfer_distance, f_score, occupancy_iou
from tokenforge.tokenizers.vat.extract import logit_grid, marching_cubes
from tokenforge.tokenizers.vat.model import VAT
from tokenforge.tokenizers.vat.preview import render_pair

TAUS = (0.01, 0.02, 0.05)


def packed_bytes(tokens_per_scale: list[int], vocab_size: int) -> int:
    """Bytes of all ids packed at ceil(log2 V) bits each."""
    return math.ceil(sum(tokens_per_scale) * max(1, math.ceil(math.log2(vocab_size))) / 8)


def load_surface(path: Path, num_points: int, margin: float = 0.05) -> tuple[Any, torch.Tensor]:
    """Normalised mesh and ``[1, N, 6]`` area-weighted surface points + face normals (seeded by the file name)."""
    import trimesh

    from tokenforge.data.mesh import load_mesh, normalise

    mesh = normalise(load_mesh(path, repair=True), margin)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    pts, faces = trimesh.sample.sample_surface(mesh, num_points, seed=rng)
    x = np.concatenate([pts, mesh.face_normals[faces]], axis=1).astype(np.float32)
    return mesh, torch.from_numpy(x)[None]


@torch.no_grad()
def reconstruct_one(model: VAT, path: Path, out: Path, num_points: int, resolution: int, scales: int | None,
                    device: str, eval_points: int = 100_000) -> dict[str, Any]:
    import trimesh

    mesh, x = load_surface(path, num_points)
    tokens = model.encode(x.to(device) if model.use_normals else x[..., :3].to(device))
    ids = tokens.ids[:scales] if scales else tokens.ids
    planes = model.decode(ids)
    rec = marching_cubes(logit_grid(lambda q: model.occupancy(planes, q), resolution, device=device))
    stem = path.stem
    rec.export(out / f"{stem}.ply")
    np.savez(out / f"{stem}.tokens.npz", **{f"scale_{i}": t[0].cpu().numpy() for i, t in enumerate(ids)})
    rng = np.random.default_rng(0)
    gt_pts = trimesh.sample.sample_surface(mesh, eval_points, seed=rng)[0]
    rec_pts = trimesh.sample.sample_surface(rec, eval_points, seed=rng)[0]
    uniform = rng.uniform(-1, 1, size=(eval_points, 3)).astype(np.float32)
    gt_occ = torch.from_numpy(mesh.contains(uniform))[None]
    pred_occ = model.occupancy(planes, torch.from_numpy(uniform)[None].to(device)).cpu() >= 0
    render_pair(mesh, rec, out / f"{stem}.png")
    counts = [int(t.shape[1]) for t in ids]
    return {"file": path.name, "scales_kept": len(ids), "tokens": sum(counts), "tokens_per_scale": counts,
            "bytes": packed_bytes(counts, model.vocab_size), "vocab_size": model.vocab_size,
            "chamfer": chamfer_distance(rec_pts, gt_pts),
            "f_score": dict(zip(map(str, TAUS), f_score(rec_pts, gt_pts, TAUS))),
            "iou": float(occupancy_iou(pred_occ, gt_occ)[0]), "watertight": bool(rec.is_watertight)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenforge vat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("reconstruct", help="meshes -> tokens -> meshes, with bytes/Chamfer/F-score/IoU")
    rec.add_argument("meshes", nargs="+", type=Path)
    rec.add_argument("--model", required=True, help="tokenforge folder or fit checkpoint of a VAT")
    rec.add_argument("--out", required=True, type=Path)
    rec.add_argument("--points", type=int, default=4096, help="surface points fed to the encoder")
    rec.add_argument("--resolution", type=int, default=128, help="marching-cubes grid (cells per axis)")
    rec.add_argument("--scales", type=int, default=None, help="keep only the first K scales (coarse-to-fine)")
    rec.add_argument("--eval-points", type=int, default=100_000, help="surface/volume samples for the metrics")
    rec.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    from tokenforge.hub import from_pretrained

    model = from_pretrained(args.model)
    if not isinstance(model, VAT):
        parser.error(f"{args.model} holds a {type(model).__name__}, not a VAT")
    model = model.to(args.device).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    results, failed = [], 0
    for path in args.meshes:
        try:
            results.append(reconstruct_one(model, path, args.out, args.points, args.resolution, args.scales,
                                           args.device, args.eval_points))
            print(json.dumps(results[-1]))
        except Exception as error:  # one refused mesh must not stop the others; its reason is reported
            failed += 1
            results.append({"file": path.name, "error": f"{type(error).__name__}: {error}"})
            print(f"{path.name}: refused: {results[-1]['error']}")
    (args.out / "metrics.json").write_text(json.dumps(results, indent=1))
    return 1 if failed else 0
