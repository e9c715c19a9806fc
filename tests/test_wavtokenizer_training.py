"""WavTokenizer training: the mel loss falls on real speech, every discriminator (the DAC one included) is
stepped, global_step counts optimiser steps, the cosine schedule, and `tokenforge fit` with the tiny config on
real speech shards writes a checkpoint that `hub.from_pretrained` restores as a working tokenizer."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from tokenforge import hub
from tokenforge.config import build
from tokenforge.tokenizers.wavtokenizer.discriminators import (
    DACDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
)
from tokenforge.tokenizers.wavtokenizer.model import WavTokenizer
from tokenforge.tokenizers.wavtokenizer.module import WavTokenizerModule, judge
from tokenforge.config_models import compose, fit_args

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tokenizers" / "wavtokenizer" / "tiny.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def batch(shared_data: Path) -> torch.Tensor:
    """Four real utterances, 0.5 s each from 1/6 s in (past the leading silence)."""
    files = sorted((shared_data / "speech24k").glob("*.flac"))[:4]
    return torch.stack([torch.from_numpy(sf.read(f, dtype="float32")[0][4000:16000]) for f in files])


def tiny_model() -> WavTokenizer:
    return build(compose(TINY)["model"]["init_args"]["model"])


def tiny_discriminators() -> dict:
    return {"multiperiod_disc": MultiPeriodDiscriminator(widths=(4, 8, 8, 8, 8)),
            "multiresolution_disc": MultiResolutionDiscriminator(channels=8),
            "dac_disc": DACDiscriminator(widths=(4, 8, 8, 8, 8), band_channels=4)}


def fit(module: WavTokenizerModule, batch: torch.Tensor, max_steps: int, callbacks=()) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=list(callbacks))
    trainer.fit(module, DataLoader([{"audio": batch, "__key__": ["k"] * len(batch)}] * max_steps, batch_size=None))
    return trainer


@torch.no_grad()
def mel(module: WavTokenizerModule, batch: torch.Tensor) -> float:
    module.eval()
    return module.mel_loss(module.model(batch).x_hat, batch).item()


@pytest.mark.learning
def test_mel_loss_falls_on_real_speech(batch: torch.Tensor) -> None:
    module = WavTokenizerModule(tiny_model(), learning_rate=3e-3, evaluate_pesq=False)
    before = mel(module, batch)  # eval mode: k-means has not run yet, every frame maps to code 0
    module.train()
    trainer = fit(module, batch, 30)
    after = mel(module, batch)
    assert trainer.global_step == 30 and int(module.generator_step) == 30  # no discriminator: one step per batch
    assert after < 0.75 * before, (before, after)
    assert int(module.model.quantizer.inited) == 1


class Snapshots(pl.Callback):
    def __init__(self) -> None:
        self.outputs, self.params = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.outputs.append(outputs)
        self.params.append({name: torch.cat([p.detach().flatten().clone() for p in d.parameters()])
                            for name, d in (("mpd", module.mpd), ("mrd", module.mrd), ("dac", module.dac))})


def test_gan_steps_every_discriminator_and_counts_optimizer_steps(batch: torch.Tensor) -> None:
    module = WavTokenizerModule(tiny_model(), **tiny_discriminators(), pretrain_mel_steps=1, evaluate_pesq=False)
    initial = {name: torch.cat([p.detach().flatten().clone() for p in d.parameters()])
               for name, d in (("mpd", module.mpd), ("mrd", module.mrd), ("dac", module.dac))}
    snaps = Snapshots()
    trainer = fit(module, batch[:2], 5, [snaps])  # 1 (mel pre-training) + 2 + 2 optimiser steps = 3 batches
    assert trainer.global_step == 5 and int(module.generator_step) == 3
    first, second = snaps.outputs[0], snaps.outputs[1]
    assert set(first) == {"mel", "commit", "loss"}
    assert set(second) == {"mel", "commit", "loss", "g_mpd", "fm_mpd", "g_mrd", "fm_mrd", "g_dac", "fm_dac"}
    expected = (45 * second["mel"] + 1000 * second["commit"] + second["g_mpd"] + second["fm_mpd"]
                + second["g_mrd"] + second["fm_mrd"] + second["g_dac"] + second["fm_dac"])
    assert torch.allclose(second["loss"], expected, rtol=1e-5)
    for name in ("mpd", "mrd", "dac"):
        assert torch.equal(snaps.params[0][name], initial[name]), name  # untouched during mel pre-training
        assert not torch.equal(snaps.params[1][name], initial[name]), name  # then stepped, DAC included


@pytest.mark.parametrize("name", ["multiperiod_disc", "multiresolution_disc", "dac_disc"])
def test_one_stacked_pass_equals_separate_real_and_fake_calls(batch: torch.Tensor, name: str) -> None:
    torch.manual_seed(0)
    disc = tiny_discriminators()[name]
    for p in disc.parameters():  # the conditioning embeddings start at zero: make them count
        p.data.add_(0.1 * torch.randn_like(p))
    real, fake = batch[:2], batch[2:4] + 0.05 * torch.randn_like(batch[2:4])
    bandwidth = torch.tensor([2])
    (real_logits, fake_logits), (real_fmaps, fake_fmaps) = judge(disc, real, fake, bandwidth)
    for stacked, (logits, fmaps) in ((real_logits, disc(real, bandwidth)), (fake_logits, disc(fake, bandwidth))):
        assert len(stacked) == len(logits)
        for a, b in zip(stacked, logits):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for stacked, fmaps in ((real_fmaps, disc(real, bandwidth)[1]), (fake_fmaps, disc(fake, bandwidth)[1])):
        assert [len(f) for f in stacked] == [len(f) for f in fmaps]
        for a, b in zip(sum(stacked, []), sum(fmaps, [])):
            assert a.shape == b.shape and a.shape[0] == 2
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def shards(shared_data: Path, tmp_path_factory) -> Path:
    from tokenforge.data.shards import make_shards

    out = tmp_path_factory.mktemp("speech_shards")
    make_shards("audio", shared_data / "speech24k", out, val_fraction=0.1, progress=False, sample_rate=24000,
                segment_seconds=None, min_seconds=0.5, silence_db=-60.0)
    return out


def test_cli_fit_tiny_config_on_speech_shards(shards: Path, tmp_path: Path, batch: torch.Tensor) -> None:
    from tokenforge.cli import lightning_cli

    cli = lightning_cli(args=[
        "fit", *fit_args(TINY), "--data.init_args.train", str(shards), "--data.init_args.val", str(shards),
        "--trainer.max_steps", "6", "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--data.init_args.epoch_samples", "12",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.dirpath", str(tmp_path / "ckpt"), "--trainer.callbacks.save_last", "true"])
    assert cli.trainer.global_step == 6 and int(cli.model.generator_step) == 3
    assert cli.trainer.callback_metrics["val/mel_loss"] > 0 and "val/pesq" in cli.trainer.callback_metrics
    model = hub.from_pretrained(tmp_path / "ckpt" / "last.ckpt")
    assert isinstance(model, WavTokenizer)
    for key, value in cli.model.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    tokens = model.encode(batch)
    assert tokens.ids.shape == (4, 38) and int(tokens.ids.max()) < 256
    assert model.decode(tokens).shape == batch.shape
