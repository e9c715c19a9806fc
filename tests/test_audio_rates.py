"""Audio at any sample rate and channel count (issue 21 item 4): in at 8, 16, 22.05, 44.1 and 48 kHz, mono or stereo,
out at the input's rate and shape, with the metrics computed at their own rates.

Inputs are bundled real recordings (`shared_data`): 16 kHz speech and 8 kHz music as they are, 48 kHz full-band
speech as it is, 22.05 kHz and 44.1 kHz made by resampling the 48 kHz recordings (no real corpus at those rates
ships in PyPI or Debian), and a stereo file by stacking two real recordings as its channels. The tokenizer is a
tiny random-init WavTokenizer (24 kHz): these tests check rates, lengths and channels, not quality.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tokenforge import codes_file, hub
from tokenforge.audio_files import load_audio
from tokenforge.audio_rates import for_output, source_frames
from tokenforge.cli import main as tokenforge_main
from tokenforge.config import build
from tokenforge.config_models import compose
from tokenforge.data.audio import resample

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
SECONDS = 1.2  # of each input: enough for PESQ/STOI to find speech, short enough to stay fast


def _cut(wave: np.ndarray, rate: int) -> np.ndarray:
    return wave[: int(SECONDS * rate)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build(compose(REPO / "configs/tokenizers/wavtokenizer/tiny.yaml")["model"]["init_args"]["model"]).eval()
    return hub.save_pretrained(model, tmp_path_factory.mktemp("wt") / "model")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data: Path) -> dict[str, Path]:
    """``name -> file``: 8 kHz music, 16 kHz speech, 22.05 kHz and 44.1 kHz stereo from 48 kHz speech, 48 kHz."""
    d = tmp_path_factory.mktemp("rates")
    speech16, r16 = sf.read(shared_data / "speech" / "agent-incorrect.flac", dtype="float32")
    music8, r8 = sf.read(shared_data / "music" / "macroform-cold_day.flac", dtype="float32")
    left, r48 = sf.read(shared_data / "speech48k" / "Front_Left.flac", dtype="float32")
    right, _ = sf.read(shared_data / "speech48k" / "Front_Right.flac", dtype="float32")
    assert (r16, r8, r48) == (16000, 8000, 48000)
    n = min(len(left), len(right))
    files = {"8k": (music8[int(10 * r8):], r8), "16k": (speech16, r16),
             "22k": (resample(left, r48, 22050).numpy(), 22050),
             "44k_stereo": (np.stack([resample(c[:n], r48, 44100).numpy() for c in (left, right)], axis=1), 44100),
             "48k": (left, r48)}
    out = {}
    for name, (wave, rate) in files.items():
        out[name] = d / f"{name}.flac"
        sf.write(out[name], _cut(wave, rate), rate, subtype="PCM_16")
    return out


def test_load_resample_and_back_restore_the_input(inputs: dict[str, Path]) -> None:
    """In at the model's 24 kHz and back at the source's rate: same shape, and the signal survives (an identity
    decoder: only the two polyphase resamplings between them; 48 / 44.1 kHz lose what lies above 12 kHz)."""
    for name, path in inputs.items():
        original, rate = sf.read(path, dtype="float32", always_2d=True)
        wave, facts = load_audio(path, 24000)
        assert facts["source_rate"] == rate and facts["channels"] == original.shape[1]
        assert source_frames(facts) == original.shape[0]
        assert abs(wave.numel() - original.shape[0] * 24000 / rate) <= 1
        back, out_rate = for_output(wave, 24000, facts, "source", "source")
        assert out_rate == rate
        assert tuple(back.shape) == (original.shape if original.shape[1] > 1 else original.shape[:1])
        mono = torch.from_numpy(original.mean(1))
        low = resample(resample(mono, rate, 24000), 24000, rate)  # what 24 kHz can hold of the input
        ref = mono if rate <= 24000 else low[: len(mono)]
        channel = back[:, 0] if back.ndim == 2 else back
        snr = 10 * math.log10(float(ref.square().sum()) / float((channel - ref).square().sum().clamp_min(1e-12)))
        assert snr > 35, (name, snr)  # measured 45 to 51 dB at 8-22.05 kHz (sinc roll-off), > 140 dB above


def _run(argv: list[str]) -> int:
    try:
        return tokenforge_main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_reconstruct_writes_the_input_rate_and_shape(model_dir: Path, inputs: dict[str, Path],
                                                     tmp_path: Path) -> None:
    out = tmp_path / "rec"
    assert _run(["reconstruct", "--model", str(model_dir), *map(str, inputs.values()), "--out", str(out),
                 "--device", "cpu", "--output-rate", "source", "--output-channels", "source", "--dnsmos"]) == 0
    for name, path in inputs.items():
        given, written = sf.info(str(path)), sf.info(str(out / f"{name}.flac"))
        assert (written.samplerate, written.frames, written.channels) == (given.samplerate, given.frames,
                                                                           given.channels), name
    report = json.loads((out / "metrics.json").read_text())
    assert report["metric_rates"] == {"mel_distance": 24000, "stft_distance": 24000, "si_snr_db": 24000,
                                      "pesq": 16000, "stoi": 10000, "dnsmos": 16000, "utmos": 16000}
    assert report["output"] == {"rate": "source", "channels": "source"}
    for entry in report["files"].values():
        assert entry["mel_distance"] > 0 and 1.0 <= entry["dnsmos_ovrl"] <= 5.0
    assert report["dnsmos"]["versions"]["speechmos"] and report["dnsmos"]["ovrl"]["n"] == len(inputs)
    assert 1.0 <= report["mean"]["dnsmos_p808"] <= 5.0


def test_encode_records_the_source_and_decode_returns_any_rate(model_dir: Path, inputs: dict[str, Path],
                                                               tmp_path: Path) -> None:
    files = [inputs["8k"], inputs["44k_stereo"]]
    assert _run(["encode", "--model", str(model_dir), *map(str, files), "--out", str(tmp_path / "codes"),
                 "--device", "cpu"]) == 0
    for path in files:
        _, header = codes_file.read(tmp_path / "codes" / f"{path.stem}{codes_file.SUFFIX}")
        info = sf.info(str(path))
        assert header["source"]["source_rate"] == info.samplerate and header["source"]["channels"] == info.channels
        assert source_frames(header["source"]) == info.frames and header["input"]["sample_rate"] == 24000
    runs = {"model": [], "source": [], "16000": ["--output-channels", "source"]}
    for rate, extra in runs.items():
        assert _run(["decode", "--model", str(model_dir), str(tmp_path / "codes"), "--out", str(tmp_path / rate),
                     "--device", "cpu", "--output-rate", rate, *extra]) == 0
    for path in files:
        info = sf.info(str(path))
        at_model = sf.info(str(tmp_path / "model" / f"{path.stem}.flac"))
        assert at_model.samplerate == 24000 and abs(at_model.frames - info.frames * 24000 / info.samplerate) <= 1
        at_source = sf.info(str(tmp_path / "source" / f"{path.stem}.flac"))
        assert (at_source.samplerate, at_source.frames, at_source.channels) == (info.samplerate, info.frames, 1)
        at16 = sf.info(str(tmp_path / "16000" / f"{path.stem}.flac"))
        assert at16.samplerate == 16000 and at16.frames == round(at_model.frames * 16000 / 24000)
        assert at16.channels == info.channels
    # decode at the source rate == reconstruct of the same files (same batches) at the source rate, bit for bit
    assert _run(["reconstruct", "--model", str(model_dir), *map(str, files), "--out", str(tmp_path / "rec"),
                 "--device", "cpu", "--output-rate", "source", "--no-metrics"]) == 0
    for path in files:
        decoded, _ = sf.read(tmp_path / "source" / f"{path.stem}.flac", dtype="int16")
        rebuilt, _ = sf.read(tmp_path / "rec" / f"{path.stem}.flac", dtype="int16")
        assert np.array_equal(decoded, rebuilt), path.name


def test_output_rate_is_checked(model_dir: Path, inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert _run(["reconstruct", "--model", str(model_dir), str(inputs["16k"]), "--out", str(tmp_path),
                 "--output-rate", "12"]) == 2
    assert "give model, source or a rate in Hz" in capsys.readouterr().err
