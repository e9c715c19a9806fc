"""Mesh reconstruction metrics as 3DShape2VecSet evaluates them (shared/specs/vat3d.md §4, §5).

- Chamfer: mean NN distance gt->pred + mean NN distance pred->gt (Euclidean, NOT squared), KD-tree.
- F-score at tau: precision = share of pred points within tau of gt, recall = share of gt points within tau of
  pred, F = 2PR / (P + R) (0 when both are 0). Default tau 0.02 in the [-1, 1]^3 frame (3DShape2VecSet; VAT's
  threshold is not public).
- Volume IoU of boolean occupancies (per sample), |A & B| / |A | B| (1 when both are empty).

Every point query runs in chunks of points, so memory is bounded by the chunk, not by the number of points.
`contains`: trimesh's ray test keeps every ray-triangle candidate pair of a query at once (tens of bytes per
point and face: 100k points on a 20k-face mesh took 23 GB), so it asks ``CONTAINS_BUDGET // faces`` points at
a time (512 on a 20k-face mesh, about 0.3 GB). The nearest-neighbour queries of the Chamfer distance and the
F-score ask ``QUERY_CHUNK`` points at a time of a KD-tree built once. Results equal one query over all points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

DEFAULT_TAU = 0.02
CONTAINS_BUDGET = 10_000_000  # points x faces per ray test
QUERY_CHUNK = 65536


def _points(x: np.ndarray | Tensor, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != 3 or len(arr) == 0:
        raise ValueError(f"{name} must be a non-empty [N, 3] point set, got shape {arr.shape}")
    return arr.astype(np.float64)


def nearest_distances(points: np.ndarray, tree: cKDTree, chunk: int = QUERY_CHUNK) -> np.ndarray:
    """Distance of each of ``points`` to its nearest neighbour in ``tree``, ``chunk`` points per query."""
    out = np.empty(len(points), dtype=np.float64)
    for start in range(0, len(points), chunk):
        out[start:start + chunk] = tree.query(points[start:start + chunk])[0]
    return out


def directed_distances(pred: np.ndarray | Tensor, gt: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(distance of each gt point to pred, distance of each pred point to gt)."""
    p, g = _points(pred, "pred"), _points(gt, "gt")
    return nearest_distances(g, cKDTree(p)), nearest_distances(p, cKDTree(g))


def contains(mesh, points: np.ndarray | Tensor, chunk: int | None = None) -> np.ndarray:
    """``mesh.contains`` (trimesh ray test) for ``[N, 3]`` points in chunks -> bool ``[N]``.

    ``chunk`` points per test; default ``CONTAINS_BUDGET // faces`` (at least 64), so memory does not grow with
    the mesh or the number of points.
    """
    pts = points.detach().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points)
    chunk = chunk or max(64, CONTAINS_BUDGET // max(1, len(mesh.faces)))
    out = np.empty(len(pts), dtype=bool)
    for start in range(0, len(pts), chunk):
        out[start:start + chunk] = mesh.contains(pts[start:start + chunk])
    return out


def chamfer_distance(pred: np.ndarray | Tensor, gt: np.ndarray | Tensor) -> float:
    gt_to_pred, pred_to_gt = directed_distances(pred, gt)
    return float(gt_to_pred.mean() + pred_to_gt.mean())


def f_score(pred: np.ndarray | Tensor, gt: np.ndarray | Tensor,
            thresholds: float | Sequence[float] = DEFAULT_TAU) -> float | list[float]:
    gt_to_pred, pred_to_gt = directed_distances(pred, gt)
    taus = [thresholds] if np.isscalar(thresholds) else list(thresholds)
    out = []
    for tau in taus:
        precision, recall = float((pred_to_gt < tau).mean()), float((gt_to_pred < tau).mean())
        out.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return out[0] if np.isscalar(thresholds) else out


def occupancy_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """Boolean ``[B, Q]`` occupancies -> IoU ``[B]``."""
    if pred.shape != gt.shape:
        raise ValueError(f"occupancy shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    pred, gt = pred.bool().reshape(len(pred), -1), gt.bool().reshape(len(gt), -1)
    inter, union = (pred & gt).sum(1).float(), (pred | gt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
