"""Mesh reconstruction metrics as 3DShape2VecSet evaluates them (shared/specs/vat3d.md §4, §5).

- Chamfer: mean NN distance gt->pred + mean NN distance pred->gt (Euclidean, NOT squared), KD-tree.
- F-score at tau: precision = share of pred points within tau of gt, recall = share of gt points within tau of
  pred, F = 2PR / (P + R) (0 when both are 0). Default tau 0.02 in the [-1, 1]^3 frame (3DShape2VecSet; VAT's
  threshold is not public).
- Volume IoU of boolean occupancies (per sample), |A & B| / |A | B| (1 when both are empty).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

DEFAULT_TAU = 0.02


def _points(x: np.ndarray | Tensor, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != 3 or len(arr) == 0:
        raise ValueError(f"{name} must be a non-empty [N, 3] point set, got shape {arr.shape}")
    return arr.astype(np.float64)


def directed_distances(pred: np.ndarray | Tensor, gt: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(distance of each gt point to pred, distance of each pred point to gt)."""
    p, g = _points(pred, "pred"), _points(gt, "gt")
    return cKDTree(p).query(g)[0], cKDTree(g).query(p)[0]


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
