"""Meshes: trimesh-loadable files -> normalised ``ply`` + precomputed 3D training targets; and back to batches.

Writing (`prepare`), following shared/specs/vat3d.md section 5 (3DShape2VecSet conventions; VAT's own are not
public): load as one triangle mesh; reject files without faces; a mesh that is not watertight is repaired
(``fill_holes`` + ``fix_normals``) or rejected with the open/non-manifold edge count, because occupancy is
meaningless for an open surface; the bounding box is centred and scaled so its longest half-extent is
``1 - margin`` (inside [-1,1]^3). Targets, sampled once per shape with a seed from the file name, so runs
repeat: ``points.npy``/``normals.npy`` (area-weighted surface samples and their face normals),
``vol.npy``/``vol_occ.npy`` (uniform queries in the cube, inside or not) and ``near.npy``/``near_occ.npy``
(surface samples + N(0, ``near_sigma``^2) jitter, clipped to the cube). Occupancy comes from
``trimesh.Trimesh.contains`` (ray tests, needs rtree); that is why it is done here and not per step.
Reading (`Decoder`): ``num_points`` surface points (random subset in training, a fixed per-key subset
otherwise) and ``num_queries`` queries, half uniform and half near-surface (equal counts, as the peers use),
with ``occupancy`` float and ``near`` bool.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenforge.data.shards import EpochSeed, Rejected, WorkerRandom, npy_bytes
from tokenforge.metrics.mesh import contains

MODALITY = "mesh"
EXTENSIONS = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
ARRAYS = ("points", "normals", "vol", "vol_occ", "near", "near_occ")


def check_options(num_surface: int = 8192, num_vol: int = 4096, num_near: int = 4096, near_sigma: float = 0.01,
                  margin: float = 0.05, repair: bool = True, seed: int = 0) -> dict[str, Any]:
    if min(num_surface, num_vol, num_near) < 1:
        raise ValueError("num_surface, num_vol and num_near must all be >= 1")
    if not 0 <= margin < 1:
        raise ValueError(f"margin {margin} must be in [0, 1)")
    return {"num_surface": num_surface, "num_vol": num_vol, "num_near": num_near, "near_sigma": near_sigma,
            "margin": margin, "repair": repair, "seed": seed}


def describe(options: dict[str, Any]) -> dict[str, Any]:
    return {"mesh_targets": {k: options[k] for k in ("num_surface", "num_vol", "num_near", "near_sigma", "margin")},
            "normalisation": "bounding box centred, longest half-extent = 1 - margin"}


def load_mesh(path: Path, repair: bool) -> Any:
    """A watertight, consistently wound ``trimesh.Trimesh`` with positive volume, or `Rejected`."""
    import trimesh

    if path.stat().st_size == 0:
        raise Rejected("empty file (0 bytes)")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=True)
    except Exception as error:  # trimesh raises ValueError/IndexError/KeyError... on malformed files
        raise Rejected(f"unreadable mesh: {type(error).__name__}: {error}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise Rejected(_no_faces(path))
    if not np.isfinite(mesh.vertices).all():
        raise Rejected("non-finite vertex coordinates")
    if not mesh.is_watertight and repair:
        trimesh.repair.fill_holes(mesh)
        trimesh.repair.fix_normals(mesh)
    if not mesh.is_watertight:
        edges = np.sort(mesh.edges, axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        bad = int((counts != 2).sum())
        raise Rejected(f"not watertight{' after repair' if repair else ''}: {bad} open or non-manifold edges")
    if not mesh.is_winding_consistent:
        trimesh.repair.fix_normals(mesh)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def _no_faces(path: Path) -> str:
    """Why a file gave no triangles: a point cloud, an empty scene, or vertices whose faces did not parse."""
    import trimesh

    try:
        raw = trimesh.load(str(path))
    except Exception:  # it loaded once with force="mesh"; a second failure changes nothing about the reason
        raw = None
    if isinstance(raw, trimesh.PointCloud):
        return (f"no faces: a point cloud ({len(raw.vertices)} points, no triangles); occupancy targets need a "
                "closed triangle mesh, so mesh the points first (e.g. Poisson reconstruction)")
    if isinstance(raw, trimesh.Scene) and not raw.geometry:
        return "no faces: an empty scene or mesh (the file holds no geometry)"
    vertices = len(getattr(raw, "vertices", ()))
    return f"no faces: {vertices} vertices but no triangles (no face lines, or none that parse)"


def normalise(mesh: Any, margin: float) -> Any:
    """Centre the bounding box and scale the longest half-extent to ``1 - margin``."""
    low, high = mesh.bounds
    half = float((high - low).max()) / 2
    if half <= 0:
        raise Rejected("degenerate mesh: zero extent")
    mesh = mesh.copy()
    mesh.apply_translation(-(low + high) / 2)
    mesh.apply_scale((1 - margin) / half)
    return mesh


def prepare(path: Path, *, num_surface: int, num_vol: int, num_near: int, near_sigma: float, margin: float,
            repair: bool, seed: int) -> list[dict[str, Any]]:
    """One sample: ``ply`` (the normalised mesh) + the six target arrays as ``.npy``."""
    mesh = normalise(load_mesh(path, repair), margin)
    rng = np.random.default_rng([seed, zlib.crc32(path.name.encode())])
    points, faces = _surface(mesh, num_surface, rng)
    normals = mesh.face_normals[faces].astype(np.float32)
    vol = rng.uniform(-1.0, 1.0, size=(num_vol, 3)).astype(np.float32)
    near_base, _ = _surface(mesh, num_near, rng)
    near = np.clip(near_base + rng.normal(0.0, near_sigma, size=near_base.shape), -1.0, 1.0).astype(np.float32)
    vol_occ = contains(mesh, vol)  # in chunks of points: one ray test over all of them can take tens of GB
    near_occ = contains(mesh, near)
    buffer = io.BytesIO()
    mesh.export(buffer, file_type="ply", encoding="binary")
    facts = {"faces": int(len(mesh.faces)), "vertices": int(len(mesh.vertices)), "source": path.name,
             "volume": float(mesh.volume), "vol_inside": float(vol_occ.mean())}
    arrays = {"points": points, "normals": normals, "vol": vol, "vol_occ": vol_occ, "near": near,
              "near_occ": near_occ}
    sample = {f"{name}.npy": npy_bytes(value) for name, value in arrays.items()}
    return [{"ply": buffer.getvalue(), **sample, "json": json.dumps(facts).encode()}]


def _surface(mesh: Any, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    points, faces = trimesh.sample.sample_surface(mesh, count, seed=rng)
    return points.astype(np.float32), faces


# ----------------------------------------------------------------------------- reading


def load_arrays(sample: dict[str, Any]) -> dict[str, np.ndarray]:
    """The six target arrays of a raw sample, shape-checked."""
    arrays = {}
    for name in ARRAYS:
        member = sample.get(f"{name}.npy")
        if member is None:
            raise KeyError(f"sample {sample.get('__key__')!r} lacks {name}.npy (members: {sorted(sample)})")
        arrays[name] = np.load(io.BytesIO(member), allow_pickle=False)
    for name in ("points", "normals", "vol", "near"):
        if arrays[name].ndim != 2 or arrays[name].shape[1] != 3:
            raise ValueError(f"{name}.npy has shape {arrays[name].shape}, expected [N, 3]")
    if arrays["normals"].shape != arrays["points"].shape:
        raise ValueError(f"normals {arrays['normals'].shape} do not match points {arrays['points'].shape}")
    for name in ("vol", "near"):
        if arrays[f"{name}_occ"].shape != arrays[name].shape[:1]:
            raise ValueError(f"{name}_occ.npy has shape {arrays[name + '_occ'].shape}, expected {arrays[name].shape[:1]}")
    return arrays


class Decoder:
    """Picklable per-sample decode: raw sample -> points/normals/queries/occupancy/near tensors."""

    def __init__(self, num_points: int = 2048, num_queries: int = 2048, train: bool = True,
                 seed: int | EpochSeed = 0) -> None:
        self.num_points, self.num_queries, self.train, self.seed = num_points, num_queries, train, int(seed)
        self.rng = WorkerRandom(seed, "decode")

    def _pick(self, rng: np.random.Generator, available: int, count: int) -> np.ndarray:
        return rng.choice(available, size=count, replace=count > available)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        arrays = load_arrays(sample)
        rng = self.rng.numpy() if self.train else np.random.default_rng(
            [self.seed, zlib.crc32(str(sample.get("__key__")).encode())])
        surface = self._pick(rng, len(arrays["points"]), self.num_points)
        n_vol = self.num_queries // 2
        vol = self._pick(rng, len(arrays["vol"]), n_vol)
        near = self._pick(rng, len(arrays["near"]), self.num_queries - n_vol)
        queries = np.concatenate([arrays["vol"][vol], arrays["near"][near]])
        occupancy = np.concatenate([arrays["vol_occ"][vol], arrays["near_occ"][near]])
        is_near = np.concatenate([np.zeros(len(vol), bool), np.ones(len(near), bool)])
        out = {"points": arrays["points"][surface], "normals": arrays["normals"][surface], "queries": queries,
               "occupancy": occupancy.astype(np.float32), "near": is_near}
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()} | {
            "points": torch.from_numpy(np.ascontiguousarray(out["points"], dtype=np.float32)),
            "normals": torch.from_numpy(np.ascontiguousarray(out["normals"], dtype=np.float32)),
            "queries": torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))}
