"""Issue 7: malformed meshes (shared/data/meshes/bad), an empty scene and point clouds without normals are either
handled or refused with a one-line reason, through `tokenforge reconstruct` (VAT's hook) and `tokenforge shards make meshes`
(the real ``main(argv)`` paths) and through `VAT.encode` for in-memory points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenforge import hub
from tokenforge.data.cli import main as shards_main
from tokenforge.reconstruct import main as reconstruct_main
from tokenforge.tokenizers.vat.model import VAT

TINY = dict(dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, num_latents=16, latent_dim=8, codebook_size=64,
            scales=[1, 2, 4, 8, 16], triplane_resolution=8, triplane_channels=8, triplane_upsample=0, mlp_hidden=16)
FAST = ["--points", "64", "--resolution", "8", "--eval-points", "200", "--device", "cpu"]
# file -> a piece of the reason it must be refused with (manifest.json's `defect` for each)
REFUSED = {
    "empty.ply": "empty file (0 bytes)",
    "empty.obj": "empty file (0 bytes)",
    "OutOfMemory.off": "unreadable mesh: ValueError: cannot reshape array",
    "malformed.obj": "unreadable mesh: IndexError: index 11 is out of bounds",
    "invalid.off": "no faces: 3 vertices but no triangles",
    "points.ply": "no faces: a point cloud (4 points, no triangles)",
    "cube_binary_truncated.ply": "unreadable mesh: ValueError: PLY is unexpected length",
    "Spider_binary.stl": "not watertight after repair: 92 open or non-manifold edges",
}
REPAIRED = {"sphereWithHole.stl", "ChineseDragon-10kv.off"}  # small holes: filled, then used


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return hub.save_pretrained(VAT(**TINY).eval(), tmp_path_factory.mktemp("vat") / "tiny")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def refusals(stderr: str) -> dict[str, str]:
    """``skipped: NAME: REASON`` lines of the reconstruct verb -> {name: reason}."""
    return dict(line[len("skipped: "):].split(": ", 1) for line in stderr.splitlines() if line.startswith("skipped: "))


def empty_scene_file(folder: Path) -> Path:
    """A glTF holding one scene with no nodes: trimesh loads it as an empty `trimesh.Scene`."""
    import trimesh

    with pytest.raises(ValueError, match="empty"):  # trimesh will not write an empty scene itself
        trimesh.Scene().export(folder / "nothing.glb")
    path = folder / "empty_scene.gltf"
    path.write_text(json.dumps({"asset": {"version": "2.0"}, "scenes": [{"nodes": []}], "scene": 0}))
    loaded = trimesh.load(str(path))
    assert isinstance(loaded, trimesh.Scene) and not loaded.geometry
    return path


def point_cloud_file(folder: Path) -> Path:
    """A PLY of 500 points on a sphere, no faces and no normals."""
    import trimesh

    v = np.random.default_rng(0).normal(size=(500, 3))
    path = folder / "cloud.ply"
    trimesh.PointCloud(0.5 * v / np.linalg.norm(v, axis=1, keepdims=True)).export(path)
    assert isinstance(trimesh.load(str(path)), trimesh.PointCloud)
    return path


def test_reconstruct_refuses_each_bad_file_with_one_line_and_keeps_going(shared_data: Path, model_dir: Path,
                                                                       tmp_path: Path, capsys) -> None:
    bad = sorted((shared_data / "meshes/bad").iterdir())
    assert {p.name for p in bad} == set(REFUSED) | REPAIRED
    code = reconstruct_main([*map(str, bad), "--model", str(model_dir), "--out", str(tmp_path), *FAST])
    out, err = capsys.readouterr()
    assert code == 3  # some files were skipped (EXIT_SOME_SKIPPED), and the run still finished every file
    assert "Traceback" not in out + err
    reasons = refusals(err)
    assert set(reasons) == set(REFUSED)
    for name, piece in REFUSED.items():
        assert reasons[name].startswith(piece), (name, reasons[name])
        assert not reasons[name].startswith("Rejected")  # the reason itself, not an exception class name
    results = {r["file"]: r for r in json.loads((tmp_path / "metrics.json").read_text())}
    assert set(results) == set(REFUSED) | REPAIRED
    assert all(results[name]["error"] == reasons[name] for name in REFUSED)
    for name in REPAIRED:  # repaired and encoded; the untrained field is meshed or recorded as empty, never a crash
        entry = results[name]
        assert "error" not in entry and entry["tokens"] == 31 and entry["bytes"] == 24
        assert (tmp_path / entry["mesh"]).is_file() if entry["mesh"] else "empty" in entry["empty"]
        assert (tmp_path / f"{Path(name).stem}.tokens.npz").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["shapes"] for row in summary] == [2]


def test_shards_make_meshes_writes_one_line_reasons(shared_data: Path, tmp_path: Path, capsys) -> None:
    code = shards_main(["make", "meshes", str(shared_data / "meshes/bad"), str(tmp_path), "--no-progress",
                        "--num-surface", "64", "--num-vol", "32", "--num-near", "32"])
    assert code == 3  # some files were rejected (EXIT_SOME_SKIPPED); the others are in the shards
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = (tmp_path / "rejected.jsonl").read_text().splitlines()
    rejected = {Path(r["file"]).name: r["reason"] for r in map(json.loads, lines)}
    assert set(rejected) == set(REFUSED) and len(lines) == len(REFUSED)
    printed = [line for line in err.splitlines() if line.startswith("skipped: ")]  # one line per file, with why
    assert len(printed) == len(REFUSED) and all(rejected[Path(line.split(": ")[1]).name] in line for line in printed)
    for name, piece in REFUSED.items():
        assert rejected[name].startswith(piece) and "\n" not in rejected[name], (name, rejected[name])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["count"] == len(REPAIRED)


def test_empty_scene_and_point_cloud_files_are_refused_by_both_paths(model_dir: Path, tmp_path: Path,
                                                                     capsys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    scene, cloud = empty_scene_file(src), point_cloud_file(src)
    code = reconstruct_main([str(scene), str(cloud), "--model", str(model_dir), "--out", str(tmp_path / "rec"),
                             *FAST])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err  # every mesh refused: nothing written (exit 1)
    reasons = refusals(err)
    assert reasons["empty_scene.gltf"] == "no faces: an empty scene or mesh (the file holds no geometry)"
    assert reasons["cloud.ply"].startswith("no faces: a point cloud (500 points, no triangles)")
    assert "mesh the points first" in reasons["cloud.ply"]
    assert json.loads((tmp_path / "rec/summary.json").read_text()) == []
    assert "(no shape was reconstructed)" in out
    code = shards_main(["make", "meshes", str(src), str(tmp_path / "shards"), "--no-progress"])
    rejected = {Path(r["file"]).name: r["reason"]
                for r in map(json.loads, (tmp_path / "shards/rejected.jsonl").read_text().splitlines())}
    assert code == 1 and rejected == {"empty_scene.gltf": reasons["empty_scene.gltf"],  # all rejected: failed
                                      "cloud.ply": reasons["cloud.ply"]}


def test_in_memory_points_without_normals_empty_or_nan() -> None:
    torch.manual_seed(0)
    with_normals, xyz_only = VAT(**TINY).eval(), VAT(**TINY, use_normals=False).eval()
    v = torch.randn(1, 128, 3)
    xyz = 0.5 * v / v.norm(dim=-1, keepdim=True)
    with pytest.raises(ValueError, match=r"use_normals=True but the points carry no normals \(\[B, N, 3\]\)"):
        with_normals.encode(xyz)
    # handled: an xyz-only VAT encodes a bare point cloud, and ignores normals when they are given
    ids = xyz_only.encode(xyz).ids
    assert [t.shape for t in ids] == [(1, n) for n in TINY["scales"]]
    same = xyz_only.encode(torch.cat([xyz, 2 * xyz], -1)).ids
    assert all(torch.equal(a, b) for a, b in zip(ids, same))
    with pytest.raises(ValueError, match="empty point cloud"):
        with_normals.encode(torch.zeros(1, 0, 6))
    with pytest.raises(ValueError, match="NaN or Inf"):
        with_normals.encode(torch.full((1, 8, 6), float("nan")))
    with pytest.raises(ValueError, match=r"expects surface points \[B, N, 6\]"):
        with_normals.encode(torch.zeros(128, 6))
