"""Nothing lost on interruption: training stopped at a checkpoint and resumed with ``ckpt_path`` ends with the same
weights as one uninterrupted run (CPU, fixed batch order). Covers the WavTokenizer GAN module (two optimisers,
two schedulers, its generator-step counter, the EMA codebook, random bandwidth ids, dead-code restarts) and a
class-conditional GPT (EMA weights, warm-up + cosine schedule, label and token dropout). A run stopped
mid-epoch by Ctrl-C (``interrupted.ckpt``) on audio shards read by DataLoader workers resumes exactly too, and
so does one stopped by a real SIGINT in the middle of an optimiser step (GAN and GPT; the GPT through
``tokenforge fit`` and the printed resume command)."""

from __future__ import annotations

import multiprocessing
import os
import shlex
import signal
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from tokenforge.cli import lightning_cli
from tokenforge.config import build
from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.generators.autoregressive.module import ARModule
from tokenforge.interrupt_checkpoint import InterruptCheckpoint
from tokenforge.tokenizers.wavtokenizer.module import WavTokenizerModule
from tokenforge.config_models import compose, fit_args

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tokenizers" / "wavtokenizer" / "tiny.yaml"
GPT_TINY = REPO / "configs" / "generators" / "autoregressive" / "tiny.yaml"
CROP = 12000  # 0.5 s

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def wavtokenizer() -> WavTokenizerModule:
    torch.manual_seed(0)
    spec = compose(TINY)["model"]["init_args"]
    return WavTokenizerModule(build(spec["model"]), build(spec["multiperiod_disc"]),
                              build(spec["multiresolution_disc"]), build(spec["dac_disc"]), learning_rate=2e-3,
                              pretrain_mel_steps=3, gan_ramp_steps=4, num_warmup_steps=2, num_training_steps=20,
                              evaluate_pesq=False)


def gpt() -> ARModule:
    torch.manual_seed(0)
    model = GPT(vocab_size=16, seq_len=16, layout="sequence", dim=32, depth=2, num_heads=2, multiple_of=32,
                num_classes=2)
    return ARModule(model, lr=3e-3, warmup_steps=2, ema_decay=0.9)


def fit(module: pl.LightningModule, loader: DataLoader, epochs: int, root: Path, ckpt: Path | None = None,
        accelerator: str = "cpu") -> None:
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_epochs=epochs, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=root)
    trainer.fit(module, loader, ckpt_path=ckpt)
    trainer.save_checkpoint(root / "last.ckpt")


def interrupted_equals_whole(make: Callable[[], pl.LightningModule], loader: DataLoader, tmp_path: Path,
                             accelerator: str = "cpu", atol: float = 0.0) -> pl.LightningModule:
    """Two epochs at once vs one epoch, a checkpoint and a resume in a fresh module: identical state dicts
    (to ``atol`` on a GPU, whose reductions need not repeat bit for bit)."""
    whole = make()
    fit(whole, loader, 2, tmp_path / "whole", accelerator=accelerator)
    first = make()
    fit(first, loader, 1, tmp_path / "first", accelerator=accelerator)
    resumed = make()
    torch.manual_seed(123)  # a new process would not share the interrupted run's random state (CUDA's included)
    fit(resumed, loader, 2, tmp_path / "resumed", ckpt=tmp_path / "first" / "last.ckpt", accelerator=accelerator)
    expected = whole.state_dict()
    assert resumed.state_dict().keys() == expected.keys()
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=atol, msg=key)
    moved = [k for k, v in first.state_dict().items() if v.is_floating_point() and not torch.equal(v, expected[k])]
    assert len(moved) > len(expected) // 2  # the second epoch changed most tensors: there was something to lose
    return resumed


@pytest.fixture(scope="module")
def speech(shared_data: Path) -> torch.Tensor:
    files = sorted((shared_data / "speech24k").glob("*.flac"))[:8]
    return torch.stack([torch.from_numpy(sf.read(f, dtype="float32")[0][4000:4000 + CROP]) for f in files])


def test_wavtokenizer_resumes_exactly(speech: torch.Tensor, tmp_path: Path) -> None:
    loader = DataLoader(speech, batch_size=2)  # 4 batches per epoch, same order every epoch
    resumed = interrupted_equals_whole(wavtokenizer, loader, tmp_path)
    assert int(resumed.generator_step) == 8


def speech_tokens(speech: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Token rows from real speech: every 750th sample of each crop, amplitude in 16 equal-count bins."""
    samples = speech[:, ::750]
    ids = torch.bucketize(samples, samples.flatten().quantile(torch.linspace(0, 1, 17)[1:-1]))
    return [{"ids": row, "cls": torch.tensor(i % 2)} for i, row in enumerate(ids)]


def test_gpt_resumes_exactly(speech: torch.Tensor, tmp_path: Path) -> None:
    resumed = interrupted_equals_whole(gpt, DataLoader(speech_tokens(speech), batch_size=2), tmp_path)
    assert resumed.ema is not None and resumed.trainer.global_step == 8


@pytest.mark.gpu
def test_gpt_resumes_on_cuda(speech: torch.Tensor, tmp_path: Path) -> None:
    # dropout draws from the CUDA generator: without its state in the checkpoint the weights would differ by
    # far more than the tolerance
    resumed = interrupted_equals_whole(gpt, DataLoader(speech_tokens(speech), batch_size=2), tmp_path,
                                       accelerator="gpu", atol=1e-5)
    assert resumed.trainer.global_step == 8


class CtrlCAt(pl.Callback):
    """Presses Ctrl-C before the batch that would make ``step`` optimiser steps (mid-epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class SigintAt(pl.Callback):
    """A real Ctrl-C in the middle of an optimiser step: SIGINT to this process and its DataLoader workers (a
    terminal sends it to all of them) after the first backward pass of the batch that starts at ``step``."""

    def __init__(self, step: int) -> None:
        self.step, self.sent = step, False

    def on_after_backward(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("stop", ["raise", "sigint"])
def test_mid_epoch_interrupt_on_shards_resumes_exactly(shared_data: Path, tmp_path: Path, stop: str) -> None:
    from tokenforge.data.datamodule import ShardDataModule
    from tokenforge.data.shards import make_shards

    shards = tmp_path / "shards"
    make_shards("audio", f"{shared_data}/speech24k/a*.flac", shards, shard_size=4, progress=False, sample_rate=24000)

    def data() -> ShardDataModule:  # 3 batches of 4 random 0.5 s crops per epoch, read by 2 workers
        return ShardDataModule(str(shards), modality="audio", batch_size=4, num_workers=2, segment_samples=CROP,
                               gain_db=3.0, epoch_samples=12, shuffle_buffer=8)

    def run(root: Path, *callbacks: pl.Callback, ckpt: Path | None = None) -> WavTokenizerModule:
        module = wavtokenizer()
        trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                             callbacks=list(callbacks))
        trainer.fit(module, datamodule=data(), ckpt_path=ckpt)
        return module

    whole = run(tmp_path / "whole")
    # 3 mel-only batches (1 step each), then GAN batches (2 steps each): step 5 starts batch 2 of 3 in epoch 2.
    # "raise": KeyboardInterrupt before that batch; "sigint": SIGINT inside its discriminator step, which
    # finishes the batch and saves before the next one (after 7 steps).
    with pytest.raises(SystemExit):  # Lightning exits after a Ctrl-C, once InterruptCheckpoint has saved
        run(tmp_path / "first", CtrlCAt(5) if stop == "raise" else SigintAt(5))
    interrupted = tmp_path / "first" / "checkpoints" / "interrupted.ckpt"
    assert torch.load(interrupted, weights_only=True)["global_step"] == (5 if stop == "raise" else 7)
    torch.manual_seed(123)
    resumed = run(tmp_path / "resumed", ckpt=interrupted)
    assert int(resumed.generator_step) == int(whole.generator_step) == 6
    expected = whole.state_dict()
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def face_tokens(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from token_shards import make_token_shards

    return make_token_shards(shared_data, tmp_path_factory.mktemp("faces"))


def gpt_args(tokens: Path) -> list[str]:
    """The tiny GPT config on face tokens: 5 batches per epoch, 12 steps; EMA and dropout on, validation at
    every epoch's end."""
    return [*fit_args(GPT_TINY), "--data.init_args.train", str(tokens), "--data.init_args.val", str(tokens),
            "--data.init_args.batch_size", "8", "--data.init_args.epoch_samples", "40",
            "--model.init_args.model.init_args.vocab_size", "16", "--model.init_args.ema_decay", "0.9",
            "--trainer.max_steps", "12", "--trainer.enable_progress_bar", "false"]


def test_gpt_sigint_mid_epoch_resumes_exactly_with_the_printed_command(face_tokens: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "whole").mkdir()
    monkeypatch.chdir(tmp_path / "whole")
    whole = lightning_cli(["fit", *gpt_args(face_tokens)]).model

    (tmp_path / "first").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    cli = lightning_cli(gpt_args(face_tokens), run=False)
    cli.trainer.callbacks.append(SigintAt(7))  # inside batch 3 of 5 of epoch 2
    with pytest.raises(SystemExit):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    saver = next(c for c in cli.trainer.callbacks if isinstance(c, InterruptCheckpoint))
    saved = torch.load(saver.saved, weights_only=True)
    assert saved["global_step"] == 8  # the step the signal landed in was finished
    progress = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert progress["completed"] == 3 and progress["ready"] == 4  # batch 4 of epoch 2 is next
    config = Path(cli.trainer.log_dir) / "config.yaml"
    assert saver.command == f"tokenforge fit --config {config} --ckpt_path {saver.saved}"

    torch.manual_seed(123)  # a new process would not share the interrupted run's random state
    resumed = lightning_cli(shlex.split(saver.command)[1:])  # the printed command, as typed
    assert resumed.trainer.global_step == whole.trainer.global_step == 12
    expected = whole.state_dict()
    assert resumed.model.state_dict().keys() == expected.keys()
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
