"""Mesh shards on real CGAL/assimp meshes: exact arrays, normalisation, occupancy checked by hand, bad files."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from tokenforge.data.datamodule import ShardDataModule
from tokenforge.data.mesh import ARRAYS, check_options, prepare
from tokenforge.data.shards import make_shards, shard_urls

SMALL = ["icosahedron", "3torus", "joint", "part", "dragknob", "eight"]
COUNTS = {"num_surface": 300, "num_vol": 200, "num_near": 200}


def read_tars(folder: Path, split: str) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for url in shard_urls(folder, split):
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


@pytest.fixture(scope="module")
def meshes(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    src = tmp_path_factory.mktemp("src")
    for name in SMALL:
        (src / f"{name}.ply").write_bytes((shared_data / "meshes" / f"{name}.ply").read_bytes())
    out = tmp_path_factory.mktemp("shards")
    return out, make_shards("meshes", src, out, val_fraction=0.34, shard_size=2, progress=False, **COUNTS), src


def test_arrays_round_trip_exactly(meshes: tuple[Path, dict, Path]) -> None:
    out, manifest, src = meshes
    assert manifest["count"] == len(SMALL) and manifest["splits"]["val"]["count"] == 2
    assert manifest["mesh_targets"]["num_surface"] == 300
    seen = []
    for split in ("train", "val"):
        for key, sample in read_tars(out, split).items():
            seen.append(key)
            direct = prepare(src / f"{key}.ply", **check_options(**COUNTS))[0]
            for name in ARRAYS:
                stored = np.load(io.BytesIO(sample[f"{name}.npy"]))
                np.testing.assert_array_equal(stored, np.load(io.BytesIO(direct[f"{name}.npy"])))
            assert sample["ply"] == direct["ply"]
    assert sorted(seen) == sorted(SMALL)


def test_normalisation_and_targets(meshes: tuple[Path, dict, Path], shared_data: Path) -> None:
    out, _, _ = meshes
    samples = {**read_tars(out, "train"), **read_tars(out, "val")}
    for key, sample in samples.items():
        mesh = trimesh.load(io.BytesIO(sample["ply"]), file_type="ply")
        low, high = mesh.bounds
        np.testing.assert_allclose((low + high) / 2, 0, atol=1e-6)
        assert abs((high - low).max() / 2 - 0.95) < 1e-5 and mesh.is_watertight
        original = trimesh.load(shared_data / "meshes" / f"{key}.ply")
        scale = 0.95 / ((original.bounds[1] - original.bounds[0]).max() / 2)
        np.testing.assert_allclose(mesh.volume, original.volume * scale**3, rtol=1e-5)
        arrays = {n: np.load(io.BytesIO(sample[f"{n}.npy"])) for n in ARRAYS}
        assert arrays["points"].shape == (300, 3) and arrays["points"].dtype == np.float32
        assert arrays["vol"].shape == (200, 3) and arrays["vol_occ"].dtype == bool
        _, distance, _ = trimesh.proximity.closest_point(mesh, arrays["points"])
        assert distance.max() < 1e-5  # surface samples lie on the surface
        np.testing.assert_allclose(np.linalg.norm(arrays["normals"], axis=1), 1, atol=1e-5)
        assert np.abs(arrays["vol"]).max() <= 1 and np.abs(arrays["near"]).max() <= 1
        _, near_distance, _ = trimesh.proximity.closest_point(mesh, arrays["near"])
        assert near_distance.max() < 6 * 0.01 and 0.003 < near_distance.mean() < 0.02  # sigma = 0.01 jitter


def test_occupancy_of_a_convex_mesh_matches_half_spaces(meshes: tuple[Path, dict, Path]) -> None:
    out, _, _ = meshes
    sample = {**read_tars(out, "train"), **read_tars(out, "val")}["icosahedron"]
    mesh = trimesh.load(io.BytesIO(sample["ply"]), file_type="ply")
    for name in ("vol", "near"):
        queries = np.load(io.BytesIO(sample[f"{name}.npy"]))
        # convex: inside iff on the inner side of every face plane (outward normals)
        signed = np.einsum("qfk,fk->qf", queries[:, None, :] - mesh.triangles[None, :, 0, :], mesh.face_normals)
        inside = (signed < 0).all(axis=1)
        margin = np.abs(signed).min(axis=1) > 1e-6
        occupancy = np.load(io.BytesIO(sample[f"{name}_occ.npy"]))
        np.testing.assert_array_equal(occupancy[margin], inside[margin])
        if name == "near":
            assert 0.2 < occupancy.mean() < 0.8  # near-surface queries straddle the surface


def test_bad_meshes_are_rejected_with_reason_or_repaired(shared_data: Path, tmp_path: Path) -> None:
    manifest = make_shards("meshes", shared_data / "meshes/bad", tmp_path / "out", progress=False,
                           num_surface=64, num_vol=32, num_near=32)
    rejected = {Path(r["file"]).name: r["reason"] for r in map(json.loads, (tmp_path / "out/rejected.jsonl").open())}
    assert set(rejected) == {"empty.ply", "empty.obj", "OutOfMemory.off", "malformed.obj", "invalid.off",
                             "points.ply", "cube_binary_truncated.ply", "Spider_binary.stl"}
    assert "0 bytes" in rejected["empty.ply"] and "no faces" in rejected["points.ply"]
    assert "not watertight after repair" in rejected["Spider_binary.stl"]
    assert "unexpected length" in rejected["cube_binary_truncated.ply"]
    # both holes are small: filled, then watertight, so they are kept
    assert manifest["count"] == 2 and set(read_tars(tmp_path / "out", "train")) == {"sphereWithHole",
                                                                                       "ChineseDragon-10kv"}
    strict = make_shards("meshes", shared_data / "meshes/bad/sphereWithHole.stl", tmp_path / "strict",
                         progress=False, repair=False, num_surface=8, num_vol=8, num_near=8)
    assert strict["count"] == 0 and strict["rejected"] == 1


def test_datamodule_mesh_batches(meshes: tuple[Path, dict, Path]) -> None:
    out, _, _ = meshes
    dm = ShardDataModule(train=str(out), val=str(out), modality="mesh", num_points=128, num_queries=100,
                         batch_size=2, epoch_samples=4)
    dm.setup()
    for batch in dm.train_dataloader():
        assert batch["points"].shape == batch["normals"].shape == (2, 128, 3)
        assert batch["queries"].shape == (2, 100, 3) and batch["occupancy"].shape == (2, 100)
        assert batch["occupancy"].dtype == torch.float32 and batch["near"].dtype == torch.bool
        assert batch["near"].sum(1).tolist() == [50, 50]
    first = next(iter(dm.val_dataloader()))
    again = next(iter(dm.val_dataloader()))
    assert torch.equal(first["queries"], again["queries"])  # deterministic validation subsets
    sample = read_tars(out, "val")[first["__key__"][0]]
    vol, occ = (np.load(io.BytesIO(sample[n])) for n in ("vol.npy", "vol_occ.npy"))
    for q, o in zip(first["queries"][0, :50].numpy(), first["occupancy"][0, :50].numpy()):
        row = np.flatnonzero((vol == q).all(axis=1))[0]  # each uniform query carries its own stored label
        assert o == float(occ[row])
