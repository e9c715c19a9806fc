"""Audio shards on real speech and music: exact FLAC round trip, resampling, segments, rejections, loader."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tokenforge.data.audio import resample
from tokenforge.data.datamodule import ShardDataModule
from tokenforge.data.shards import make_shards, shard_urls


def read_tars(folder: Path, split: str) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for url in shard_urls(folder, split):
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


@pytest.fixture(scope="module")
def speech(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("speech")
    manifest = make_shards("audio", f"{shared_data}/speech/a*.flac", out, val_fraction=0.3, shard_size=4,
                           sample_rate=16000, progress=False)
    return out, manifest


def test_flac_round_trip_is_exact(speech: tuple[Path, dict], shared_data: Path) -> None:
    out, manifest = speech
    sources = sorted((shared_data / "speech").glob("a*.flac"))
    assert manifest["count"] == len(sources) > 5 and manifest["rejected"] == 0 and manifest["sample_rate"] == 16000
    keys = []
    for split in ("train", "val"):
        samples = read_tars(out, split)
        assert sorted(samples) == sorted(manifest["splits"][split]["keys"])
        keys += list(samples)
        for key, sample in samples.items():
            got, rate = sf.read(io.BytesIO(sample["flac"]), dtype="int16")
            expected, source_rate = sf.read(shared_data / "speech" / f"{key}.flac", dtype="int16")
            assert rate == source_rate == 16000
            np.testing.assert_array_equal(got, expected)
            assert json.loads(sample["json"])["frames"] == len(expected)
    assert sorted(keys) == sorted(p.stem for p in sources)  # each file exactly once


def test_resampling_matches_the_analytic_signal() -> None:
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    up = resample(tone, 16000, 24000).numpy()
    assert up.shape == (24000,)
    np.testing.assert_allclose(up[300:-300], np.sin(2 * np.pi * 440 * np.arange(24000) / 24000)[300:-300], atol=2e-3)
    down = resample(tone, 16000, 11025).numpy()
    assert down.shape == (11025,)
    np.testing.assert_allclose(down[300:-300], np.sin(2 * np.pi * 440 * np.arange(11025) / 11025)[300:-300],
                               atol=2e-3)
    high = np.sin(2 * np.pi * 12000 * np.arange(48000) / 48000).astype(np.float32)
    folded = resample(high, 48000, 16000).numpy()  # 12 kHz is above the new Nyquist: filtered, not aliased to 4 kHz
    assert folded.shape == (16000,) and np.sqrt(np.mean(folded[300:-300] ** 2)) < 5e-3  # vs 0.707 if aliased


def test_segments_and_resampled_music(shared_data: Path, tmp_path: Path) -> None:
    music = sorted((shared_data / "music").glob("*.flac"))[:2]
    manifest = make_shards("audio", music[0].parent / f"{music[0].stem[:4]}*.flac", tmp_path / "out",
                           sample_rate=16000, segment_seconds=7.0, min_seconds=2.0, progress=False)
    samples = read_tars(tmp_path / "out", "train")
    per_file = 60 // 7 + 1  # 60 s at 7 s: 8 full pieces and a 4 s tail (kept: >= 2 s)
    n_files = len(list(music[0].parent.glob(f"{music[0].stem[:4]}*.flac")))
    assert manifest["count"] == len(samples) == per_file * n_files
    key = f"{music[0].stem.replace('-', '-')}__s0003"
    wave, rate = sf.read(io.BytesIO(samples[key]["flac"]), dtype="float32")
    assert rate == 16000 and wave.shape == (7 * 16000,)
    source, source_rate = sf.read(music[0], dtype="float32")
    expected = resample(source, source_rate, 16000).numpy()[3 * 7 * 16000: 4 * 7 * 16000]
    np.testing.assert_allclose(wave, expected, atol=1 / 32768 + 1e-6)  # PCM16 quantisation only
    tail = sf.read(io.BytesIO(samples[f"{music[0].stem}__s0008"]["flac"]))[0]
    assert len(tail) == 60 * 16000 - 8 * 7 * 16000


def test_broken_audio_is_rejected_with_reason_or_converted(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    voice, rate = sf.read(shared_data / "speech48k/Front_Left.flac", dtype="float32")
    nan = voice.copy()
    nan[100:200] = np.nan
    sf.write(src / "nan.wav", nan, rate, subtype="FLOAT")
    sf.write(src / "short.wav", voice[: rate // 10], rate)  # 0.1 s
    sf.write(src / "silence.flac", np.zeros(rate), rate)
    (src / "zero.wav").write_bytes(b"")
    (src / "text.flac").write_text("not audio at all")
    sf.write(src / "stereo.wav", np.stack([voice, 0.5 * voice], axis=1), rate, subtype="PCM_16")
    speech = (shared_data / "speech/activated.flac").read_bytes()
    (src / "truncated.flac").write_bytes(speech[: len(speech) // 2])
    manifest = make_shards("audio", src, tmp_path / "out", sample_rate=16000, progress=False)
    rejected = {Path(r["file"]).stem: r["reason"] for r in map(json.loads, (tmp_path / "out/rejected.jsonl").open())}
    assert set(rejected) == {"nan", "short", "silence", "zero", "text", "truncated"}
    assert "non-finite" in rejected["nan"] and "too short: 0.100 s" in rejected["short"]
    assert "silent" in rejected["silence"] and "0 bytes" in rejected["zero"] and "unreadable" in rejected["text"]
    samples = read_tars(tmp_path / "out", "train")
    assert "unreadable" in rejected["truncated"]  # libsndfile: "flac decoder lost sync"
    assert manifest["count"] == 1 and set(samples) == {"stereo"}
    mono, out_rate = sf.read(io.BytesIO(samples["stereo"]["flac"]), dtype="float32")
    pcm = sf.read(src / "stereo.wav", dtype="float32")[0].mean(axis=1)
    assert out_rate == 16000
    np.testing.assert_allclose(mono, resample(pcm, rate, 16000).numpy(), atol=1 / 32768 + 1e-6)


def test_datamodule_audio_batches(speech: tuple[Path, dict], shared_data: Path) -> None:
    out, manifest = speech
    dm = ShardDataModule(train=str(out), val=str(out), modality="audio", sample_rate=16000, segment_samples=8000,
                         batch_size=3, epoch_samples=9, gain_db=6.0, shuffle_buffer=4)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and all(b["audio"].shape == (3, 8000) and b["audio"].dtype == torch.float32
                                     for b in batches)
    assert all(b["audio"].abs().max() <= 1 for b in batches)
    val = [b for b in dm.val_dataloader()]
    assert sum(len(b["__key__"]) for b in val) == manifest["splits"]["val"]["count"]
    key = val[0]["__key__"][0]
    expected = sf.read(shared_data / "speech" / f"{key}.flac", dtype="float32")[0][:8000]
    np.testing.assert_array_equal(val[0]["audio"][0, : len(expected)].numpy(), expected)  # start, no gain
    dm24 = ShardDataModule(train=str(out), val=str(out), modality="audio", sample_rate=24000,
                           segment_samples=None, batch_size=1)
    dm24.setup()
    first = next(iter(dm24.val_dataloader()))
    source = sf.read(shared_data / "speech" / f"{first['__key__'][0]}.flac", dtype="float32")[0]
    assert first["audio"].shape == (1, int(np.ceil(len(source) * 1.5)))  # resampled to the requested rate
