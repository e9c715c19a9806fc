"""VAT mesh side: metrics on analytic spheres, marching cubes, and the packed token size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tokenforge.metrics.mesh import chamfer_distance, f_score, occupancy_iou
from tokenforge.tokenizers.vat.cli import packed_bytes
from tokenforge.tokenizers.vat.extract import logit_grid, marching_cubes


def sphere_points(radius: float, n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return radius * v / np.linalg.norm(v, axis=1, keepdims=True)


def test_chamfer_and_fscore_of_concentric_spheres() -> None:
    a, b = sphere_points(0.5, 20000, 0), sphere_points(0.53, 20000, 1)
    # every NN distance is >= 0.03 (radius gap) and close to it for dense samples
    cd = chamfer_distance(a, b)
    assert 0.06 <= cd < 0.075
    assert f_score(a, b, 0.02) == 0.0  # nothing within 0.02 of the other sphere
    assert f_score(a, b, [0.02, 0.05]) == [0.0, 1.0]
    assert chamfer_distance(a, a) == 0.0 and f_score(a, a) == 1.0
    with pytest.raises(ValueError, match="non-empty"):
        chamfer_distance(np.zeros((0, 3)), a)


def test_iou_by_hand_and_sphere_volume_from_marching_cubes() -> None:
    pred = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    gt = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.allclose(occupancy_iou(pred, gt), torch.tensor([1 / 3, 1.0]))
    mesh = marching_cubes(logit_grid(lambda q: 0.6 - q.norm(dim=-1), 40))
    assert mesh.is_watertight
    assert abs(mesh.volume - 4 / 3 * math.pi * 0.6**3) / (4 / 3 * math.pi * 0.6**3) < 0.02
    with pytest.raises(ValueError, match="empty"):
        marching_cubes(torch.full((5, 5, 5), -1.0))


def test_packed_bytes() -> None:
    assert packed_bytes([1, 2, 4, 8, 16], 64) == math.ceil(31 * 6 / 8)
    assert packed_bytes([256], 256) == 256 and packed_bytes([1, 2, 4, 8, 16, 32, 64, 128, 256], 4096) == 767
