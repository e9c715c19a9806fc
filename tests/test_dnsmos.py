"""DNSMOS offline on bundled speech (speechmos' ONNX models, checked by sha256) and UTMOS from a local file.

Clean speech must score above the same speech with white noise added at 10 dB SNR. Measured drops on the two clips:
BAK 2.1 and 2.4, OVRL 1.1 and 1.3, P.808 1.5 and 1.6 (SIG barely moves, 0.1: it rates the speech itself); the
asserted ones (BAK > 1.0, OVRL > 0.7, P.808 > 0.5) are far from any kernel's rounding. The network is blocked
for the whole module: nothing may be fetched.
"""

from __future__ import annotations

import socket

import pytest
import soundfile as sf
import torch

pytest.importorskip("speechmos")
pytest.importorskip("onnxruntime")
pytest.importorskip("librosa")

from tokenforge.metrics import dnsmos as D  # noqa: E402
from tokenforge.metrics import utmos as U  # noqa: E402
from tokenforge.metrics.weights import WeightsUnavailable  # noqa: E402

CLIPS = ("agent-incorrect.flac", "vm-undelete.flac")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _clip(shared_data, name: str) -> tuple[torch.Tensor, int]:
    wave, rate = sf.read(shared_data / "speech" / name, dtype="float32")
    return torch.from_numpy(wave), rate


def _noisy(wave: torch.Tensor, snr_db: float = 10.0) -> torch.Tensor:
    noise = torch.randn(wave.shape, generator=torch.Generator().manual_seed(0))
    scale = wave.square().mean().sqrt() / noise.square().mean().sqrt() / 10 ** (snr_db / 20)
    return (wave + scale * noise).clamp(-1, 1)


@pytest.mark.parametrize("name", CLIPS)
def test_dnsmos_clean_above_noisy(shared_data, name):
    wave, rate = _clip(shared_data, name)
    clean, noisy = D.dnsmos(wave, rate), D.dnsmos(_noisy(wave), rate)
    assert set(clean) == {"sig", "bak", "ovrl", "p808"}
    for scores in (clean, noisy):
        assert all(1.0 <= v <= 5.0 for v in scores.values()), scores
    assert clean["ovrl"] > 2.5 and clean["bak"] > 3.5, clean  # real, clean studio prompts
    assert clean["bak"] - noisy["bak"] > 1.0 and clean["ovrl"] - noisy["ovrl"] > 0.7, (clean, noisy)
    assert clean["p808"] - noisy["p808"] > 0.5, (clean, noisy)


def test_dnsmos_any_rate_and_channels(shared_data):
    """The same clip at 48 kHz, in stereo, scores as at 16 kHz (resampled to the model's 16 kHz on the way in)."""
    from tokenforge.data.audio import resample

    wave, rate = _clip(shared_data, CLIPS[0])
    at16 = D.dnsmos(wave, rate)
    stereo48 = resample(wave, rate, 48000).expand(2, -1)
    at48 = D.dnsmos(stereo48, 48000)
    assert all(abs(at16[k] - at48[k]) < 0.05 for k in at16), (at16, at48)


def test_dnsmos_meter_records_versions_and_hashes(shared_data):
    meter = D.DNSMOSMeter()
    wave, rate = _clip(shared_data, CLIPS[1])
    meter.update(wave, rate)
    result = meter.result()
    assert result["ovrl"]["n"] == 1 and 1 <= result["ovrl"]["mean"] <= 5
    assert result["versions"]["speechmos"] == "0.0.1.1" and result["versions"]["onnxruntime"]
    assert result["weights"]["dnsmos"]["sha256"] == D.PRIMARY.sha256
    assert result["weights"]["dnsmos_p808"]["sha256"] == D.P808.sha256
    assert result["sample_rate"] == 16000


def test_dnsmos_missing_or_wrong_weights_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENFORGE_HOME", str(tmp_path))
    monkeypatch.setattr(D, "_IN_PACKAGE", {k: "no/such/file.onnx" for k in D._IN_PACKAGE})
    with pytest.raises(WeightsUnavailable) as missing:
        D.dnsmos(torch.zeros(16000), 16000)
    message = str(missing.value)
    assert "\n" not in message and message.startswith("dnsmos unavailable: put dnsmos_sig_bak_ovr.onnx (sha256 269f")
    assert str(tmp_path / "weights" / "dnsmos_sig_bak_ovr.onnx") in message
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "dnsmos_sig_bak_ovr.onnx").write_bytes(b"not the model")
    with pytest.raises(WeightsUnavailable, match="not the expected one"):
        D.dnsmos(torch.zeros(16000), 16000)
    assert D.DNSMOSMeter().result().startswith("dnsmos unavailable: put")


def test_dnsmos_missing_packages_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "speechmos" else real(name, *a))
    with pytest.raises(WeightsUnavailable) as error:
        D.dnsmos(torch.zeros(16000), 16000)
    assert str(error.value) == ("dnsmos unavailable: install speechmos (pip install 'tokenforge[dev]'); they carry "
                                "and run its ONNX models")


class _Loudness(torch.nn.Module):
    """A stand-in predictor: 1 + 100 * mean |x| per item (the real one is a user's UTMOS export)."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return 1 + 100 * wave.abs().mean(-1)


def test_utmos_from_a_local_torchscript_file(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("TOKENFORGE_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match=r"^utmos unavailable: put utmos.pt \(any sha256\) at "):
        U.utmos(torch.zeros(16000), 16000)
    assert U.UTMOSMeter().result().startswith("utmos unavailable")
    path = tmp_path / "weights" / "utmos.pt"
    path.parent.mkdir()
    torch.jit.script(_Loudness()).save(str(path))
    wave, rate = _clip(shared_data, CLIPS[0])
    expected = 1 + 100 * float(wave.abs().mean())
    (at16,) = U.utmos(wave, rate)
    from tokenforge.data.audio import resample

    (at48,) = U.utmos(resample(wave, rate, 48000), 48000)  # resampled to 16 kHz first
    assert at16 == pytest.approx(expected, rel=1e-6) and at48 == pytest.approx(expected, rel=0.02)
    meter = U.UTMOSMeter()
    meter.update(wave, rate)
    result = meter.result()
    assert result["n"] == 1 and result["mean"] == pytest.approx(expected, rel=1e-6)
    assert len(result["weights"]["sha256"]) == 64
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"no")
    with pytest.raises(WeightsUnavailable, match="not a TorchScript file"):
        U.utmos(wave, rate, bad)


def test_evaluate_reports_utmos_and_metric_rates(shared_data, tmp_path, monkeypatch):
    """`tokenforge evaluate` on audio: UTMOS from a local file (or its one-line reason) and each metric's rate."""
    from pathlib import Path

    from tokenforge.config import build
    from tokenforge.config_models import compose
    from tokenforge.data.shards import make_shards
    from tokenforge.evaluate import evaluate_tokenizer

    monkeypatch.setenv("TOKENFORGE_HOME", str(tmp_path / "home"))
    src = tmp_path / "src"
    src.mkdir()
    for name in CLIPS:
        (src / name).write_bytes((shared_data / "speech24k" / name).read_bytes())
    make_shards("audio", src, tmp_path / "raw", val_fraction=0.5, sample_rate=24000, progress=False)
    repo = Path(__file__).resolve().parents[1]
    model = build(compose(repo / "configs/tokenizers/wavtokenizer/tiny.yaml")["model"]["init_args"]["model"]).eval()
    weights = tmp_path / "utmos.pt"
    torch.jit.script(_Loudness()).save(str(weights))
    scored = evaluate_tokenizer(model, tmp_path / "raw", tmp_path / "b", max_items=1, progress=False,
                                utmos_weights=str(weights))
    assert scored["utmos"]["n"] == 1 and scored["utmos"]["mean"] >= 1.0
    assert scored["utmos"]["weights"]["file"] == str(weights)
    rates = scored["protocol"]["metric_rates"]
    assert (rates["mel_distance"], rates["pesq"], rates["stoi"], rates["utmos"]) == (24000, 16000, 10000, 16000)
    # without a checkpoint (none under $TOKENFORGE_HOME either) evaluate reports the one-line reason instead
    assert U.UTMOSMeter(None).result().startswith("utmos unavailable: put utmos.pt (any sha256) at ")


class _SpeechMOSLike(torch.nn.Module):
    """SpeechMOS' interface, ``predictor(wave (B, L), sr) -> (B,)``, with a length-dependent result."""

    def forward(self, wave: torch.Tensor, sr: int) -> torch.Tensor:
        return 1 + 4 * torch.sigmoid(wave.square().mean(-1).sqrt() * 10 - 1) + 0 * sr


class _FrozenLength(torch.nn.Module):
    def forward(self, wave: torch.Tensor, sr: int) -> torch.Tensor:
        return wave[:, : int(wave.shape[-1] // 2)].mean(-1)  # a Python int from the shape: the trace freezes it


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # _FrozenLength provokes it on purpose
def test_utmos_export_then_score(tmp_path, shared_data):
    """tools/export_utmos.py's step: a SpeechMOS-style predictor traced at 16 kHz, then scored like any UTMOS file."""
    wave, rate = _clip(shared_data, CLIPS[0])
    out = tmp_path / "weights" / "utmos.pt"
    digest = U.export_torchscript(_SpeechMOSLike(), out)
    (score,) = U.utmos(wave, rate, out)
    assert score == pytest.approx(float(_SpeechMOSLike()(wave[None], 16000)), rel=1e-5) and 1 < score < 5
    meter = U.UTMOSMeter(out)
    meter.update(wave, rate)
    assert meter.result()["weights"]["sha256"] == digest
    with pytest.raises(ValueError, match="the trace fixed a length"):
        U.export_torchscript(_FrozenLength(), tmp_path / "frozen.pt")
