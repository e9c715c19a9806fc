"""Issue 18: long audio is scored in windows and meshes are queried in chunks of points, so memory stays bounded.

The memory checks run in a child process and read its peak resident set (``ru_maxrss``) before and after the
step, so they measure what PESQ/trimesh allocate in C as well. Without the windows, PESQ crashes (SIGSEGV) on
the 3-minute file used here; without the chunks, the 4096-point inside test on the 19,536-face camel takes
about 2 GB more (measured), against a limit of 1 GB here and about 0.3 GB measured with them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenforge.metrics import audio as M
from tokenforge.metrics.mesh import chamfer_distance, contains, directed_distances, f_score

pytestmark = pytest.mark.usefixtures("one_thread")


def run_child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh Python; it prints one JSON line last."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"child exited {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_window_rule() -> None:
    assert M.windows(100, 0) == [(0, 100)] and M.windows(100, 100) == [(0, 100)]
    assert M.windows(101, 100) == [(0, 50), (50, 101)]  # two equal halves, no 1-sample tail
    parts = M.windows(3 * 720_000 + 5, 720_000)
    assert len(parts) == 4 and parts[0][0] == 0 and parts[-1][1] == 3 * 720_000 + 5
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert max(e - s for s, e in parts) - min(e - s for s, e in parts) <= 1


def test_windowed_scores_equal_the_whole_for_short_clips_and_stay_close_for_long(shared_data: Path) -> None:
    import soundfile as sf

    files = sorted((shared_data / "speech24k").glob("*.flac"))[:4]
    ref = torch.from_numpy(np.concatenate([sf.read(f, dtype="float32")[0] for f in files]))
    est = ref + 0.02 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))
    n, seconds = len(ref), len(ref) / 24000
    assert 8 < seconds < 30
    # no longer than the window (the default, 30 s): the same number as one pass over the whole signal
    assert float(M.mel_distance(est, ref, 24000)) == float(M.mel_distance(est, ref, 24000, window_seconds=0))
    assert float(M.stft_distance(est, ref)) == float(M.stft_distance(est, ref, window_samples=0))
    # two windows: within 1% of the whole-signal value (only the frames at the cut differ)
    whole_mel, whole_stft = float(M.mel_distance(est, ref, 24000, 0)), float(M.stft_distance(est, ref))
    halves_mel = float(M.mel_distance(est, ref, 24000, window_seconds=seconds / 2 + 0.01))
    halves_stft = float(M.stft_distance(est, ref, window_samples=n // 2 + 1))
    assert halves_mel != whole_mel and halves_mel == pytest.approx(whole_mel, rel=0.01)
    assert halves_stft != whole_stft and halves_stft == pytest.approx(whole_stft, rel=0.01)
    # SI-SNR sums window by window: the whole signal's value, without full-length temporaries
    assert float(M.si_snr(est, ref, window_samples=n // 3 + 1)) == pytest.approx(float(M.si_snr(est, ref)), rel=1e-4)
    stoi_whole = M.stoi(est, ref, 24000)[0]
    stoi_halves = M.stoi(est, ref, 24000, window_seconds=seconds / 2 + 0.01)[0]
    assert 0.5 < stoi_whole <= 1.0 and abs(stoi_halves - stoi_whole) < 0.03


def test_pesq_of_a_3_minute_file_is_scored_in_bounded_memory(shared_data: Path) -> None:
    """A 3-minute file built from the bundled speech (16 kHz): whole-file PESQ segfaults on it (seen at 180 s;
    120 s still ran); in 30 s windows it scores it, using well under 300 MB above the process."""
    result = run_child("""
        import json, resource, sys
        import numpy as np, soundfile as sf, torch
        from pathlib import Path
        from tokenforge.metrics.audio import pesq_wb
        parts, n = [], 0
        for f in sorted(Path(sys.argv[1]).glob("*.flac")):
            w = sf.read(f, dtype="float32")[0]; parts.append(w); n += len(w)
            if n >= 180 * 16000: break
        ref = torch.from_numpy(np.concatenate(parts)[:180 * 16000])
        est = ref + 0.01 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scores = {"pesq": pesq_wb(est, ref, 16000)[0]}
        extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        minute = slice(0, 60 * 16000)  # short enough for one whole-signal PESQ: windows vs whole
        scores["minute_windows"] = pesq_wb(est[minute], ref[minute], 16000, window_seconds=30)[0]
        scores["minute_whole"] = pesq_wb(est[minute], ref[minute], 16000, window_seconds=0)[0]
        print(json.dumps({**scores, "extra_mb": extra, "seconds": len(ref) / 16000}))
    """, str(shared_data / "speech"))
    assert result["seconds"] == 180.0
    assert 1.2 < result["pesq"] < 4.65  # white noise at 40 dB SNR: wideband PESQ about 1.4
    assert abs(result["minute_windows"] - result["minute_whole"]) < 0.15, result
    assert abs(result["pesq"] - result["minute_whole"]) < 0.3, result
    assert result["extra_mb"] < 300, result


def test_chunked_point_queries_equal_one_query(shared_data: Path) -> None:
    import trimesh

    from tokenforge.data.mesh import load_mesh, normalise

    mesh = normalise(load_mesh(shared_data / "meshes" / "sphere966.ply", repair=True), 0.05)
    points = np.random.default_rng(0).uniform(-1, 1, (1500, 3))
    assert np.array_equal(contains(mesh, points, chunk=64), mesh.contains(points))
    assert 0.2 < contains(mesh, points).mean() < 0.8
    a = trimesh.sample.sample_surface(mesh, 3000, seed=np.random.default_rng(1))[0]
    b = a + np.random.default_rng(2).normal(0, 0.01, a.shape)
    from scipy.spatial import cKDTree

    gt_to_pred, pred_to_gt = directed_distances(b, a)
    assert np.array_equal(gt_to_pred, cKDTree(b).query(a)[0]) and np.array_equal(pred_to_gt, cKDTree(a).query(b)[0])
    assert 0 < chamfer_distance(b, a) < 0.05 and 0.5 < f_score(b, a) <= 1.0


def test_inside_test_on_the_20k_face_mesh_is_bounded(shared_data: Path) -> None:
    """The bundled camel (19,536 faces, the largest): 4096 points through `contains` stay under 1 GB extra."""
    result = run_child("""
        import json, resource, sys
        import numpy as np
        from pathlib import Path
        from tokenforge.data.mesh import load_mesh, normalise
        from tokenforge.metrics.mesh import contains
        mesh = normalise(load_mesh(Path(sys.argv[1]), repair=True), 0.05)
        points = np.random.default_rng(0).uniform(-1, 1, (4096, 3))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        inside = contains(mesh, points)
        extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(json.dumps({"faces": len(mesh.faces), "inside": float(inside.mean()), "extra_mb": extra}))
    """, str(shared_data / "meshes" / "camel.ply"))
    assert result["faces"] == 19536
    assert 0.01 < result["inside"] < 0.2  # a thin animal in the [-1, 1] cube
    assert result["extra_mb"] < 1024, result
