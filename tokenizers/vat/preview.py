"""PNG preview without matplotlib/pyrender: orthographic point splatting with a z-buffer and Lambert shading.

Each mesh is sampled densely (area-weighted points + face normals), seen from a fixed 3/4 view, and the nearest
point per pixel is shaded by ``0.25 + 0.75 * max(0, n.l)``. Input and reconstruction are drawn side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _view() -> np.ndarray:
    a, b = np.radians(35.0), np.radians(-30.0)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rx @ ry


def render(mesh: Any, size: int = 256, samples: int = 200_000) -> np.ndarray:
    import trimesh

    pts, faces = trimesh.sample.sample_surface(mesh, samples, seed=np.random.default_rng(0))
    rot = _view()
    p, n = pts @ rot.T, mesh.face_normals[faces] @ rot.T
    light = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])
    shade = 0.25 + 0.75 * np.clip(n @ light, 0, 1)
    u = np.clip(((p[:, 0] + 1.2) / 2.4 * size).astype(int), 0, size - 1)
    v = np.clip(((1.2 - p[:, 1]) / 2.4 * size).astype(int), 0, size - 1)
    order = np.argsort(p[:, 2])  # far to near: later (nearer) points overwrite
    img = np.full((size, size), 255, np.uint8)
    img[v[order], u[order]] = (shade[order] * 255).astype(np.uint8)
    return img


def render_pair(a: Any, b: Any, path: Path, size: int = 256) -> None:
    Image.fromarray(np.concatenate([render(a, size), render(b, size)], axis=1)).save(path)
