"""WavTokenizer training-step parity (fixture ``wavtokenizer_train``) and the official-behaviour switches.

The official switches reproduce every recorded output through the registered parity function; our default
recipe differs from the fixture exactly where the module docstring says (one EMA update per batch, dead codes
restarted), and in a Lightning fit the switches change what the step does (two training forwards per batch,
the DAC discriminator left unstepped).
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from tokenforge.parity import check, parity_sources
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.wavtokenizer.discriminators import (
    DACDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
)
from tokenforge.tokenizers.wavtokenizer.model import WavTokenizer
from tokenforge.tokenizers.wavtokenizer.module import WavTokenizerModule
from tokenforge.tokenizers.wavtokenizer.seanet import SEANetEncoder
from tokenforge.tokenizers.wavtokenizer.train_parity import our_name, training_parity
from tokenforge.tokenizers.wavtokenizer.vocos import ISTFTHead, VocosBackbone

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def fixture(fixtures_dir: Path) -> Path:
    folder = fixtures_dir / "wavtokenizer_train"
    if not (folder / "outputs.safetensors").is_file():
        pytest.skip(f"{folder} not present")
    return folder


def test_official_switches_reproduce_every_recorded_output(fixture: Path) -> None:
    # declared by the method (tokenforge.methods), so tools/check_parity.py finds it by the folder's name
    assert parity_sources()["wavtokenizer_train"] == "tokenforge.tokenizers.wavtokenizer.train_parity"
    lines = check(fixture, "wavtokenizer_train")
    expected = load_file(str(fixture / "outputs.safetensors"))
    assert [line.name for line in lines] == list(expected)
    assert {line.name for line in lines if line.status != "ok"} == set(), [str(x) for x in lines if x.status != "ok"]
    assert any(line.name.startswith("grad_generator.") for line in lines)
    assert any(line.name.startswith("grad_discriminator.") for line in lines)


def test_our_default_differs_exactly_where_documented(fixture: Path) -> None:
    """Ours: one training forward per batch (``ema_after_batch`` = one EMA update, ``codes_second_forward`` =
    ``codes``) and dead codes restarted after the EMA step (those rows only); every loss, logit and gradient
    is the official one."""
    expected = load_file(str(fixture / "outputs.safetensors"))
    ours = training_parity(fixture, official=False)
    threshold = 2.0
    after = expected["ema_after_one_forward.cluster_size"]
    dead = after < threshold
    assert 0 < int(dead.sum()) < len(after)  # the fixture has codes below the expiry threshold
    # dead rows restarted from batch frames: size reset to the threshold, the embedding a real encoder frame
    assert torch.equal(ours["ema_after_one_forward.cluster_size"][dead], torch.full((int(dead.sum()),), threshold))
    frames = expected["encoder_out"].transpose(1, 2).reshape(-1, expected["encoder_out"].shape[1])
    restarted = ours["ema_after_one_forward.embed"][dead]
    assert (restarted[:, None] - frames[None]).norm(dim=-1).min(dim=1).values.max() < 1e-4
    for key in ("cluster_size", "embed_avg", "embed"):
        ref = expected[f"ema_after_one_forward.{key}"]
        live = ours[f"ema_after_one_forward.{key}"]
        assert (live[~dead] - ref[~dead]).abs().max() <= 1e-5 * max(1.0, float(ref.abs().max())), key
        # one update per batch, not two (dead rows: restarted from randomly drawn frames)
        assert torch.equal(ours[f"ema_after_batch.{key}"][~dead], live[~dead]), key
        two = expected[f"ema_after_batch.{key}"]
        assert (two[~dead] - ref[~dead]).abs().max() > 1e-3, key  # the official second update is visible
    assert torch.equal(ours["codes_second_forward"], ours["codes"])
    assert not torch.equal(expected["codes_second_forward"], expected["codes"])
    for name in ("loss_generator", "loss_discriminator", "mel_loss", "fm_dac", "disc_loss_dac"):
        assert abs(float(ours[name] - expected[name])) <= 1e-5 * abs(float(expected[name])), name
    for name in [n for n in expected if n.startswith("grad_") and expected[n].ndim]:
        assert (ours[name] - expected[name]).abs().max() <= 1e-4 * expected[name].abs().max(), name


def test_official_names_map_onto_our_parameters() -> None:
    assert our_name("feature_extractor.encodec.encoder.model.0.conv.conv.weight_v") == \
        "model.encoder.model.0.conv.parametrizations.weight.original1"
    assert our_name("feature_extractor.encodec.quantizer.vq.layers.0._codebook.embed") == \
        "model.quantizer.embedding.weight"
    assert our_name("head.out.weight") == "model.head.out.weight"
    assert our_name("multiresddisc.discriminators.1.conv_post.weight_g") == \
        "mrd.discriminators.1.conv_post.parametrizations.weight.original0"
    assert our_name("dacdiscriminator.discriminator.discriminators.7.band_convs.4.4.0.weight_v") == \
        "dac.discriminators.7.band_convs.4.4.0.parametrizations.weight.original1"
    assert our_name("dac.discriminators.0.convs.0.0.weight_v") is None  # the official never-stepped copy
    assert our_name("melspec_loss.mel_spec.mel_scale.fb") is None


class QuantizerCalls(pl.Callback):
    """Counts training forwards of the quantizer per batch and keeps the DAC discriminator's weights."""

    def __init__(self) -> None:
        self.calls, self.dac_before, self.dac_after = 0, None, None

    def on_train_start(self, trainer, module) -> None:
        module.model.quantizer.register_forward_pre_hook(lambda *_: setattr(self, "calls", self.calls + 1))
        self.dac_before = torch.cat([p.detach().flatten().clone() for p in module.dac.parameters()])

    def on_train_end(self, trainer, module) -> None:
        self.dac_after = torch.cat([p.detach().flatten().clone() for p in module.dac.parameters()])


def tiny_module(official: bool) -> WavTokenizerModule:
    torch.manual_seed(0)
    encoder = SEANetEncoder(dimension=8, n_filters=2, ratios=[8, 5, 4, 2], lstm=0)
    quantizer = VectorQuantizer(codebook_size=16, dim=8, ema=True, kmeans_init=True, kmeans_iters=2,
                                dead_code_threshold=2.0, beta=1.0, dead_code_expiry_overwritten=official)
    backbone = VocosBackbone(input_channels=8, dim=32, intermediate_dim=32, num_layers=1)
    model = WavTokenizer(encoder, quantizer, backbone, ISTFTHead(32, n_fft=1280, hop_length=320),
                         seanet_decoder=False)
    return WavTokenizerModule(
        model, MultiPeriodDiscriminator(periods=(2, 3), widths=(2, 2, 2, 2, 2)),
        MultiResolutionDiscriminator(resolutions=((512, 128, 512),), channels=2),
        DACDiscriminator(periods=(2,), fft_sizes=(512,), widths=(2, 2, 2, 2, 2), band_channels=2),
        evaluate_pesq=False, num_training_steps=10, train_dac_discriminator=not official, second_forward=official)


@pytest.mark.parametrize("official", [True, False], ids=["official", "ours"])
def test_switches_in_a_fit(official: bool) -> None:
    torch.manual_seed(1)
    audio = torch.randn(2, 3200) * 0.1
    module, calls = tiny_module(official), QuantizerCalls()
    trainer = pl.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[calls])
    trainer.fit(module, DataLoader([{"audio": audio}] * 2, batch_size=None))
    assert trainer.global_step == 4 and int(module.generator_step) == 2  # two batches, D + G step each
    assert calls.calls == (4 if official else 2)  # official: a training forward for each step of a batch
    assert torch.equal(calls.dac_after, calls.dac_before) == official  # official: the DAC is never stepped
    stepped = {id(p) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"]}
    assert any(id(p) in stepped for p in module.mpd.parameters())
    assert any(id(p) in stepped for p in module.dac.parameters()) != official
