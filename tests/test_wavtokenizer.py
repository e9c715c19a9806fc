"""WavTokenizer inference: official parity, checkpoint loading (fixture and full-size layouts), framing,
the same-padded iSTFT, the mel filter bank, eval-mode purity, discriminator losses, and input checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from tokenforge import hub
from tokenforge.hub import CheckpointError, KeyReport, map_keys
from tokenforge.nn.conv1d import convert_weight_norm_keys
from tokenforge.parity import check
from tokenforge.tokenizers.wavtokenizer import losses as L
from tokenforge.tokenizers.wavtokenizer.discriminators import (
    DACDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
)
from tokenforge.tokenizers.wavtokenizer.model import WavTokenizer, check_audio
from tokenforge.tokenizers.wavtokenizer.official import KEY_RULES, load_official, model_from_config
from tokenforge.tokenizers.wavtokenizer.vocos import ISTFT


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def fixture(fixtures_dir: Path) -> Path:
    return fixtures_dir / "wavtokenizer"


@pytest.fixture(scope="module")
def official(fixture: Path) -> WavTokenizer:
    return hub.from_official("wavtokenizer", fixture)


def speech(shared_data: Path, n: int = 2, seconds: float = 1.0) -> torch.Tensor:
    files = sorted((shared_data / "speech24k").glob("*.flac"))[:n]
    rows = [torch.from_numpy(sf.read(f, dtype="float32")[0][: int(24000 * seconds)]) for f in files]
    return torch.stack(rows)


def test_parity_fixture_all_outputs(fixture: Path) -> None:
    lines = check(fixture, "wavtokenizer")
    assert {line.name for line in lines} >= {"codes", "waveform", "waveform_bandwidth_id2", "encoder_out"}
    assert all(line.status == "ok" for line in lines), [str(x) for x in lines]


@torch.no_grad()
def test_official_ckpt_with_explicit_config(fixture: Path, official: WavTokenizer) -> None:
    config = json.loads((fixture / "config.json").read_text())
    model = hub.from_official("wavtokenizer", fixture / "model.ckpt", config=config)
    inputs, outputs = load_file(fixture / "inputs.safetensors"), load_file(fixture / "outputs.safetensors")
    tokens = model.encode(inputs["audio"])
    assert tokens.ids.shape == (2, 75) and torch.equal(tokens.ids, outputs["codes"][0])
    wave = model.decode(tokens)
    assert wave.shape == (2, 24000)
    assert (wave - outputs["waveform"]).abs().max() <= 1e-5
    assert model.vocab_size == 64 and model.frame_rate == 75.0
    assert not model.training and int(model.quantizer.inited) == 1


def test_official_loader_reports_missing_keys(fixture: Path, tmp_path: Path) -> None:
    state = load_file(fixture / "state_dict.safetensors")
    del state["backbone.embed.weight"]
    from safetensors.torch import save_file

    save_file(state, tmp_path / "state_dict.safetensors")
    (tmp_path / "config.json").write_text((fixture / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"backbone\.embed\.weight"):
        load_official(tmp_path)


@pytest.mark.parametrize("variant, ratios, n_fft, hop", [("frame75", [8, 5, 4, 2], 1280, 320),
                                                          ("frame40", [6, 5, 5, 4], 2400, 600)])
def test_full_size_layout_matches_released_checkpoints(fixture: Path, variant, ratios, n_fft, hop) -> None:
    """Every generator and discriminator key/shape of the released small checkpoints fits our modules."""
    shapes = json.loads((fixture / "full_size_state_dict_shapes.json").read_text())[variant]
    config = {"model": {"init_args": {
        "feature_extractor": {"init_args": {"dowmsamples": ratios, "vq_bins": 4096, "num_quantizers": 1}},
        "backbone": {"init_args": {"input_channels": 512, "dim": 768, "intermediate_dim": 2304, "num_layers": 12,
                                   "adanorm_num_embeddings": 4}},
        "head": {"init_args": {"dim": 768, "n_fft": n_fft, "hop_length": hop, "padding": "same"}}}}}
    with torch.device("meta"):
        model = model_from_config(config)
        discs = {"multiperioddisc.": MultiPeriodDiscriminator(), "multiresddisc.": MultiResolutionDiscriminator(),
                 "dac.": DACDiscriminator(), "dacdiscriminator.discriminator.": DACDiscriminator()}
    fake = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    generator = {k: v for k, v in fake.items() if k.startswith(("feature_extractor.", "backbone.", "head."))}
    report = KeyReport.compare(model.state_dict(), map_keys(convert_weight_norm_keys(generator), KEY_RULES))
    assert report.ok, str(report)
    assert model.hop_length == hop and model.num_frames(24000) == 24000 // hop
    for prefix, disc in discs.items():
        part = {k[len(prefix):]: v for k, v in fake.items() if k.startswith(prefix)}
        assert len(part) > 0
        report = KeyReport.compare(disc.state_dict(), convert_weight_norm_keys(part))
        assert report.ok, f"{prefix}\n{report}"
    rest = [k for k in shapes if not k.startswith(("feature_extractor.", "backbone.", "head.", *discs))]
    assert sorted(rest) == ["melspec_loss.mel_spec.mel_scale.fb", "melspec_loss.mel_spec.spectrogram.window"]


def test_mel_filterbank_equals_official_buffer(fixture: Path) -> None:
    state = hub.load_checkpoint(fixture / "model.ckpt")["state_dict"]
    assert torch.equal(L.mel_filterbank(24000, 1024, 100), state["melspec_loss.mel_spec.mel_scale.fb"])
    mel = L.MelSpectrogram()
    assert torch.equal(mel.window, state["melspec_loss.mel_spec.spectrogram.window"])
    # a 3 kHz tone puts its energy in the mel band around 3 kHz
    t = torch.arange(24000) / 24000
    spec = mel(torch.sin(2 * math.pi * 3000 * t)[None])
    assert spec.shape == (1, 100, 24000 // 256 + 1)
    centres = L.mel_to_hz(torch.linspace(0, float(L.hz_to_mel(12000.0)), 102))[1:-1]
    assert abs(float(centres[spec[0, :, 40].argmax()]) - 3000) < 150


def test_same_padded_istft_inverts_matching_stft() -> None:
    """Frames cut with (n_fft - hop)/2 padding and a Hann window come back as the signal, sample for sample."""
    n_fft, hop, frames = 64, 16, 20
    istft = ISTFT(n_fft, hop)
    x = torch.randn(2, frames * hop)
    pad = (n_fft - hop) // 2
    padded = torch.nn.functional.pad(x, (pad, pad + n_fft))
    chunks = padded.unfold(-1, n_fft, hop)[:, :frames] * istft.window
    spec = torch.fft.rfft(chunks, dim=-1).transpose(1, 2)
    y = istft(spec)
    assert y.shape == (2, frames * hop)
    assert (y - x)[:, : (frames - 3) * hop].abs().max() < 1e-5  # the last frames lack their overlap partners


@torch.no_grad()
def test_frames_and_trimming(official: WavTokenizer) -> None:
    for length in (320, 24001, 5000):
        x = torch.randn(1, length) * 0.1
        tokens = official.encode(x)
        assert tokens.ids.shape == (1, math.ceil(length / 320))
        assert tokens.meta["num_samples"] == length and official.decode(tokens).shape == (1, length)
    assert official.decode(tokens.ids).shape == (1, 16 * 320)  # bare ids: full frames


@torch.no_grad()
def test_eval_mode_has_no_side_effects(official: WavTokenizer, shared_data: Path) -> None:
    before = {k: v.clone() for k, v in official.quantizer.state_dict().items()}
    x = speech(shared_data)
    first = official(x).tokens.ids
    assert torch.equal(first, official(x).tokens.ids) and torch.equal(first, official.encode(x).ids)
    for k, v in official.quantizer.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bandwidth_id_selects_rows(official: WavTokenizer, fixture: Path) -> None:
    features = load_file(fixture / "outputs.safetensors")["features"]
    with torch.no_grad():
        a, b = official.decode_features(features, 0), official.decode_features(features, torch.tensor([2]))
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(ValueError, match="bandwidth_id"):
        official.decode_features(features, 4)


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        check_audio(torch.tensor([[0.1, float("nan")]]))
    with pytest.raises(ValueError, match="empty"):
        check_audio(torch.zeros(1, 0))
    with pytest.raises(ValueError, match="mono"):
        check_audio(torch.zeros(2, 2, 100))
    with pytest.raises(TypeError, match="float"):
        check_audio(torch.zeros(1, 100, dtype=torch.int16))
    assert check_audio(torch.zeros(100)).shape == (1, 100) and check_audio(torch.zeros(3, 1, 9)).shape == (3, 9)


def test_gan_losses_by_hand() -> None:
    real, fake = [torch.tensor([0.5, 2.0]), torch.tensor([-1.0])], [torch.tensor([-0.5, 0.5]), torch.tensor([3.0])]
    # hinge D: (mean relu(1-r) + mean relu(1+f)) per disc, averaged over 2: ((0.25 + 1.0) + (2 + 4)) / 2
    assert math.isclose(float(L.hinge_d_loss(real, fake)), (1.25 + 6.0) / 2)
    assert math.isclose(float(L.hinge_g_loss(fake)), (1.0 + 0.0) / 2)  # mean relu(1-f): (1.5+0.5)/2, 0
    assert math.isclose(float(L.lsgan_d_loss(real, fake)), (0.25 + 0.625) + (9.0 + 4.0))  # mean f^2 + mean (1-r)^2, summed
    assert math.isclose(float(L.lsgan_g_loss(fake)), (1.25 + 4.0))
    fr, ff = [[torch.ones(3), torch.zeros(2)]], [[torch.zeros(3), torch.ones(2)]]
    assert float(L.feature_matching(fr, ff)) == 2.0 and float(L.dac_feature_matching(fr, ff)) == 2.0


def test_discriminators_shapes_and_conditioning() -> None:
    x = torch.randn(2, 4000) * 0.3
    mpd = MultiPeriodDiscriminator(widths=(4, 8, 8, 8, 8))
    logits, fmaps = mpd(x, torch.tensor([1]))
    assert len(logits) == 5 and all(len(f) == 5 for f in fmaps)
    assert logits[0].shape[-1] == 2 and logits[4].shape[-1] == 11
    with torch.no_grad():
        mpd.discriminators[0].emb.weight.normal_()
    changed = mpd(x, torch.tensor([1]))[0][0]
    assert (changed - logits[0]).abs().max() > 0 and torch.equal(mpd(x, torch.tensor([1]))[0][1], logits[1])
    mrd = MultiResolutionDiscriminator(channels=8)
    logits, fmaps = mrd(x, torch.tensor([0]))
    assert len(logits) == 3 and len(fmaps[0]) == 6
    dac = DACDiscriminator(widths=(4, 8, 8, 8, 8), band_channels=4)
    logits, fmaps = dac(x)
    assert len(logits) == 8 and len(fmaps[0]) == 5 and len(fmaps[5]) == 25
    y = DACDiscriminator.preprocess(x[:, None] + 0.5)
    assert torch.allclose(y.abs().amax(-1), torch.full((2, 1), 0.8), atol=1e-6)
    assert y.mean(-1).abs().max() < 1e-4


@torch.no_grad()
def test_fast_paths_and_weight_norm_folding(fixture: Path) -> None:
    inputs, outputs = load_file(fixture / "inputs.safetensors"), load_file(fixture / "outputs.safetensors")
    model = load_official(fixture)
    ids = model.encode_ids(inputs["audio"])
    assert torch.equal(ids, outputs["codes"][0])
    model.fuse_weight_norm()
    assert not any("parametrizations" in k for k in model.state_dict())
    assert torch.equal(model.encode_ids(inputs["audio"]), ids)
    wave = model.decode_ids(ids, torch.tensor([0]))
    assert (wave - outputs["waveform"]).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="code indices"):
        model.decode(torch.full((1, 4), 64))


def to_official_keys(state: dict) -> dict:
    """Our state dict -> the official Lightning key layout (inverse of official.KEY_RULES)."""
    import re

    out = {}
    for key, value in convert_weight_norm_keys(state, to="legacy").items():
        key = re.sub(r"\.conv\.(weight_g|weight_v|weight|bias)$", r".conv.conv.\1", key)
        key = re.sub(r"\.convtr\.(weight_g|weight_v|weight|bias)$", r".convtr.convtr.\1", key)
        key = re.sub(r"^encoder\.", "feature_extractor.encodec.encoder.", key)
        key = re.sub(r"^seanet_decoder\.", "feature_extractor.encodec.decoder.", key)
        key = key.replace("quantizer.embedding.weight", "quantizer.embed")
        key = re.sub(r"^quantizer\.", "feature_extractor.encodec.quantizer.vq.layers.0._codebook.", key)
        out[key] = value
    return out


@torch.no_grad()
def test_other_variant_round_trips_through_official_layout(tmp_path: Path) -> None:
    """A 40 tok/s variant with other hard-coded sizes (2 residual layers, 1 LSTM layer, no AdaLayerNorm,
    torch.istft centre padding) written in the official layout loads back through the fixture-format loader."""
    config = {
        "model": {"init_args": {
            "sample_rate": 24000,
            "feature_extractor": {"init_args": {"dowmsamples": [6, 5, 5, 4], "vq_bins": 32, "bandwidths": [6.6, 6.6]}},
            "backbone": {"init_args": {"input_channels": 16, "dim": 32, "intermediate_dim": 48, "num_layers": 1,
                                       "layer_scale_init_value": 0.5}},
            "head": {"init_args": {"dim": 32, "n_fft": 2400, "hop_length": 600, "padding": "center"}}}},
        "hardcoded_in_EncodecFeatures_overridden": {
            "SEANetEncoder": {"dimension": 16, "n_filters": 2, "n_residual_layers": 2, "lstm": 1,
                              "ratios": [6, 5, 5, 4]},
            "ResidualVectorQuantizer": {"dimension": 16, "bins": 32}},
    }
    model = model_from_config(config)
    assert model.hop_length == 600 and model.num_bandwidths == 2 and not model.backbone.adanorm
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.05)
    model.quantizer.embedding.weight.normal_()
    model.quantizer.inited.fill_(1)
    state = to_official_keys(model.state_dict())
    assert "feature_extractor.encodec.encoder.model.2.block.1.conv.conv.weight_g" in state  # 2nd residual layer
    torch.save({"state_dict": {**state, "melspec_loss.mel_spec.mel_scale.fb": torch.zeros(513, 100)}},
               tmp_path / "model.ckpt")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = hub.from_official("wavtokenizer", tmp_path)
    x = torch.randn(2, 7000) * 0.1
    tokens = model.eval().encode(x)
    assert tokens.ids.shape == (2, 12) and torch.equal(loaded.encode(x).ids, tokens.ids)
    assert torch.equal(loaded.decode(tokens), model.decode(tokens))
