"""Mesh files for the tokenizer verbs: a mesh file -> the surface points a mesh tokenizer encodes, and a decoded
field -> a mesh file.

The mesh tokenizer contract: ``encode(points [B, N, 6])`` (surface points and face normals; a tokenizer whose
``use_normals`` is False gets ``[B, N, 3]``) -> `Tokens`; ``decode(tokens)`` -> a field representation that
``occupancy(field, queries [B, Q, 3]) -> logits [B, Q]`` evaluates (inside where >= 0, queries in [-1, 1]^3).
Meshes are loaded, repaired and normalised as the mesh shards are (`tokenforge.data.mesh`); surface samples are
seeded by the file name, so a file always gives the same points. A field becomes a mesh by marching cubes on a
``resolution`` grid (`tokenforge.mesh_fields`).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenforge.mesh_fields import logit_grid, marching_cubes

MESH_SUFFIXES = {".obj", ".ply", ".stl", ".off", ".glb", ".gltf"}
QUERY_CHUNK = 65536  # occupancy queries per decoder call


def load_surface(path: Path, num_points: int, margin: float = 0.05) -> tuple[Any, torch.Tensor]:
    """Normalised mesh and ``[1, N, 6]`` area-weighted surface points + face normals (seeded by the file name).

    Raises `tokenforge.data.shards.Rejected` with the reason for a file that is no usable mesh.
    """
    import trimesh

    from tokenforge.data.mesh import load_mesh, normalise

    mesh = normalise(load_mesh(Path(path), repair=True), margin)
    rng = np.random.default_rng(zlib.crc32(Path(path).name.encode()))
    pts, faces = trimesh.sample.sample_surface(mesh, num_points, seed=rng)
    x = np.concatenate([pts, mesh.face_normals[faces]], axis=1).astype(np.float32)
    return mesh, torch.from_numpy(x)[None]


def encoder_input(tokenizer: Any, points: torch.Tensor) -> torch.Tensor:
    """Points with normals ``[B, N, 6]``, or ``[B, N, 3]`` for a tokenizer that takes no normals."""
    return points if getattr(tokenizer, "use_normals", True) else points[..., :3]


@torch.no_grad()
def occupancy_in_chunks(tokenizer: Any, field: torch.Tensor, queries: torch.Tensor,
                        chunk: int = QUERY_CHUNK) -> torch.Tensor:
    """Logits ``[Q]`` of one shape's decoded ``field`` at ``[Q, 3]`` queries, ``chunk`` queries per call."""
    device = field.device
    return torch.cat([tokenizer.occupancy(field, queries[i:i + chunk][None].to(device))[0].float().cpu()
                      for i in range(0, len(queries), chunk)])


@torch.no_grad()
def field_to_mesh(tokenizer: Any, field: torch.Tensor, resolution: int, largest_component: bool = False) -> Any:
    """One decoded field ``[1, ...]`` -> watertight ``trimesh.Trimesh``; ValueError when it is empty or full."""
    return marching_cubes(logit_grid(lambda q: tokenizer.occupancy(field, q), resolution, device=field.device),
                          largest_component=largest_component)
