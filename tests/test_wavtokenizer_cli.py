"""Audio files through WavTokenizer: `tokenforge reconstruct` / `encode` / `decode`, chunking, awkward inputs
(empty file, 0.05 s clip, 8 kHz stereo, NaN samples, a non-audio file), and the audio metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tokenforge import codes_file, hub
from tokenforge.cli import main as tokenforge_main
from tokenforge.metrics import audio as M
from tokenforge.audio_files import AudioFileError, decode_long, encode_long, load_audio


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(fixtures_dir: Path, tmp_path_factory) -> Path:
    """The parity fixture's model, saved in tokenforge's own format."""
    model = hub.from_official("wavtokenizer", fixtures_dir / "wavtokenizer")
    return hub.save_pretrained(model, tmp_path_factory.mktemp("wt") / "model")


@pytest.fixture(scope="module")
def awkward(tmp_path_factory, shared_data: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("awkward")
    speech, rate = sf.read(sorted((shared_data / "speech").glob("*.flac"))[0], dtype="float32")  # 16 kHz
    files = {"empty": d / "empty.wav", "short": d / "short.flac", "stereo8k": d / "stereo8k.wav",
             "nan": d / "nan.wav", "text": d / "notes.wav"}
    files["empty"].write_bytes(b"")
    sf.write(files["short"], speech[: int(0.05 * rate)], rate)
    stereo = np.stack([speech[::2], 0.5 * speech[::2]], axis=1)  # 8 kHz, two channels
    sf.write(files["stereo8k"], stereo, 8000)
    bad = speech.copy()
    bad[100] = np.nan
    sf.write(files["nan"], bad, rate, subtype="FLOAT")
    files["text"].write_text("this is not audio\n")
    return files


def test_load_audio_handles_or_refuses(awkward: dict[str, Path]) -> None:
    wave, facts = load_audio(awkward["stereo8k"], 24000)
    assert facts["channels"] == 2 and facts["source_rate"] == 8000
    assert abs(wave.numel() - 3 * sf.info(awkward["stereo8k"]).frames) <= 1  # resampled 8 k -> 24 k
    short, _ = load_audio(awkward["short"], 24000)
    assert short.numel() == 1200
    for name, reason in (("empty", "empty file"), ("nan", "non-finite"), ("text", "not a readable audio")):
        with pytest.raises(AudioFileError, match=reason):
            load_audio(awkward[name], 24000)


def test_reconstruct_cli_writes_files_and_reasons(model_dir: Path, awkward: dict[str, Path], tmp_path: Path,
                                                  shared_data: Path, capsys) -> None:
    good = sorted((shared_data / "speech24k").glob("*.flac"))[0]
    out = tmp_path / "rec"
    code = tokenforge_main(["reconstruct", "--model", str(model_dir), str(good), *map(str, awkward.values()),
                            "--out", str(out), "--device", "cpu"])
    assert code == 3  # three files skipped with their reasons (EXIT_SOME_SKIPPED), the others written
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["files"]) == {good.name, "short.flac", "stereo8k.wav"}
    assert set(report["skipped"]) == {"empty.wav", "nan.wav", "notes.wav"}
    assert all("\n" not in reason for reason in report["skipped"].values())
    length = sf.info(good).frames
    recon, rate = sf.read(out / f"{good.stem}.flac")
    assert rate == 24000 and len(recon) == length
    assert report["files"][good.name]["tokens"] == math.ceil(length / 320)
    assert len(sf.read(out / "short.flac")[0]) == 1200
    entry = report["files"][good.name]
    assert {"mel_distance", "stft_distance", "si_snr_db", "tokens"} <= set(entry)


def test_chunked_codes_match_whole_file_away_from_edges(model_dir: Path, shared_data: Path) -> None:
    model = hub.from_pretrained(model_dir)
    wave, _ = load_audio(sorted((shared_data / "speech24k").glob("*.flac"))[5], 24000)
    whole = encode_long(model, wave, chunk_seconds=0)
    chunked = encode_long(model, wave, chunk_seconds=0.5, context_seconds=0.5)
    assert whole.shape == chunked.shape == (math.ceil(wave.numel() / 320),)
    assert (whole == chunked).float().mean() > 0.9  # the fixture's random LSTM sees the whole past; most agree
    # with context covering the whole file every window is the whole file: stitching must be exact
    assert torch.equal(encode_long(model, wave, chunk_seconds=0.5, context_seconds=30), whole)
    out = decode_long(model, whole, wave.numel(), chunk_seconds=0.5, context_seconds=30)
    ref = decode_long(model, whole, wave.numel(), chunk_seconds=0)
    assert out.shape == wave.shape and (out - ref).abs().max() < 1e-5


def test_encode_decode_cli_round_trip(model_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    good = sorted((shared_data / "speech24k").glob("*.flac"))[1]
    assert tokenforge_main(["encode", "--model", str(model_dir), str(good), "--out", str(tmp_path / "c"),
                            "--device", "cpu"]) == 0
    tokens, header = codes_file.read(tmp_path / "c" / f"{good.stem}.codes.npz")
    assert tokens.ids.shape == (1, math.ceil(sf.info(good).frames / 320)) and tokens.ids.max() < 64
    assert header["method"] == "wavtokenizer" and header["input"]["num_samples"] == sf.info(good).frames
    assert header["input"]["sample_rate"] == 24000 and header["source"]["source_rate"] == 24000
    assert header["source"]["channels"] == 1 and header["layout"] == "sequence"
    assert tokenforge_main(["decode", "--model", str(model_dir), str(tmp_path / "c" / f"{good.stem}.codes.npz"),
                            "--out", str(tmp_path / "w"), "--device", "cpu"]) == 0
    assert len(sf.read(tmp_path / "w" / f"{good.stem}.flac")[0]) == sf.info(good).frames


def test_audio_metrics_by_hand(shared_data: Path) -> None:
    x = torch.from_numpy(sf.read(sorted((shared_data / "speech24k").glob("*.flac"))[3], dtype="float32")[0])
    assert float(M.mel_distance(x, x)) == 0.0 and float(M.stft_distance(x, x)) < 1e-6
    noise = torch.randn_like(x) * x.std() * 0.1  # 20 dB SNR
    assert abs(float(M.si_snr(x + noise, x)) - 20.0) < 0.5
    assert abs(float(M.si_snr(3.0 * x, x)) - float(M.si_snr(x, x))) < 1e-3 or float(M.si_snr(3 * x, x)) > 60
    clean = M.pesq_stoi(x[None], x[None], 24000)
    noisy = M.pesq_stoi((x + 3 * noise)[None], x[None], 24000)
    assert clean["pesq"] > 4.4 and clean["stoi"] > 0.99
    assert noisy["pesq"] < clean["pesq"] - 1 and noisy["stoi"] < clean["stoi"]
    assert float(M.mel_distance(x + 3 * noise, x)) > float(M.mel_distance(x + noise, x)) > 0
