"""``resume`` after a kill mid-run, and parallel workers, give the same samples as one plain run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import tokenforge.data.audio as audio
from tokenforge.data.shards import make_shards, shard_urls


def contents(folder: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for split in ("train", "val"):
        for url in shard_urls(folder, split) if list(folder.glob(f"{split}-*.tar")) else []:
            with tarfile.open(url) as tar:
                for member in tar.getmembers():
                    key, ext = member.name.split(".", 1)
                    assert ext not in samples.setdefault(f"{split}/{key}", {}), "duplicate member"
                    samples[f"{split}/{key}"][ext] = tar.extractfile(member).read()
    return samples


def test_resume_after_interrupt_gives_the_same_samples(shared_data: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = sorted((shared_data / "speech").glob("a*.flac"))[:7]
    for path in src:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "zz_silence.flac").write_bytes((shared_data / "speech" / src[0].name).read_bytes()[:10])
    options = dict(val_fraction=0.25, shard_size=3, sample_rate=16000, segment_seconds=1.0, progress=False)
    reference = make_shards("audio", f"{tmp_path}/*.flac", tmp_path / "plain", **options)
    expected = contents(tmp_path / "plain")
    assert reference["rejected"] == 1 and len(expected) == reference["count"] > 8

    real_prepare, calls = audio.prepare, []

    def dying_prepare(path: Path, **kw: object) -> list:
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt  # what Ctrl-C (or a kill) does in the middle of the run
        return real_prepare(path, **kw)

    monkeypatch.setattr(audio, "prepare", dying_prepare)
    with pytest.raises(KeyboardInterrupt):
        make_shards("audio", f"{tmp_path}/*.flac", tmp_path / "resumed", **options)
    monkeypatch.setattr(audio, "prepare", real_prepare)
    assert list((tmp_path / "resumed").glob("*.partial")), "the unfinished shard stays as .partial"
    finished = (tmp_path / "resumed/progress.jsonl").read_text().splitlines()
    assert finished and not (tmp_path / "resumed/manifest.json").exists()
    with pytest.raises(FileExistsError):
        make_shards("audio", f"{tmp_path}/*.flac", tmp_path / "resumed", **options)
    manifest = make_shards("audio", f"{tmp_path}/*.flac", tmp_path / "resumed", resume=True, **options)
    assert contents(tmp_path / "resumed") == expected
    assert manifest["count"] == reference["count"] and manifest["rejected"] == 1
    assert not list((tmp_path / "resumed").glob("*.partial"))
    for split in ("train", "val"):
        assert sorted(manifest["splits"][split]["keys"]) == sorted(reference["splits"][split]["keys"])


def test_resume_after_sigkill_and_parallel_workers(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "images/faces"
    options = dict(shard_size=10, format="png", progress=False)
    reference = make_shards("images", src, tmp_path / "plain", **options)
    expected = contents(tmp_path / "plain")
    parallel = make_shards("images", src, tmp_path / "parallel", workers=2, **options)
    assert contents(tmp_path / "parallel") == expected and parallel["count"] == 200

    script = (f"import time, tokenforge.data.image as m\nreal = m.prepare\n"
              f"def slow(*a, **k):\n    time.sleep(0.02)\n    return real(*a, **k)\nm.prepare = slow\n"
              f"from tokenforge.data.shards import make_shards\n"
              f"make_shards('images', {str(src)!r}, {str(tmp_path / 'killed')!r}, shard_size=10, format='png', "
              f"progress=False)\n")
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONWARNINGS": "ignore"})
    progress = tmp_path / "killed/progress.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not progress.exists() or len(progress.read_text().splitlines()) < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(progress.read_text().splitlines())
    assert 3 <= done < 20, "the kill landed mid-run"
    manifest = make_shards("images", src, tmp_path / "killed", resume=True, **options)
    assert contents(tmp_path / "killed") == expected and manifest["count"] == reference["count"]
    names = [s["name"] for s in manifest["splits"]["train"]["shards"]]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert json.loads((tmp_path / "killed/manifest.json").read_text())["count"] == 200
