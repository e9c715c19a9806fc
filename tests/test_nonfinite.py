"""Loud failure: a fit whose loss turns NaN/inf stops with one line naming the step, the batch and the terms
(`NonFiniteGuard`, added to every TrainingModule), for automatic optimisation (GPT) and a two-optimiser GAN
(VQGAN), and leaves no checkpoint with non-finite weights; ``mode=skip`` skips such batches without an optimiser
step and counts them; a GPT whose vocab_size is below the data's ids fails at the first batch with one line;
`tokenforge generate` refuses non-finite weights. Real data: the bundled face crops (image and token shards)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from tokenforge.cli import lightning_cli
from tokenforge.errors import RunFailedError, UsageError
from tokenforge.model_arg import load_model as load_module
from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.generators.autoregressive.module import ARModule
from tokenforge.hub import save_pretrained
from tokenforge.nonfinite_guard import NonFiniteGuard, NonFiniteLossError
from tokenforge.config_models import fit_args

REPO = Path(__file__).resolve().parents[1]
GPT_TINY = REPO / "configs" / "generators" / "autoregressive" / "tiny.yaml"
VQGAN_TINY = REPO / "configs" / "tokenizers" / "vqgan" / "tiny.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def faces(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``faces/raw`` (image shards) and ``faces/tokens`` (16-code token shards) of the bundled face crops."""
    from token_shards import make_token_shards

    out = tmp_path_factory.mktemp("faces")
    make_token_shards(shared_data, out)
    return out


def gpt_args(tokens: Path, *extra: str) -> list[str]:
    return ["fit", *fit_args(GPT_TINY), "--data.init_args.train", str(tokens), "--data.init_args.val",
            str(tokens), "--data.init_args.batch_size", "8", "--data.init_args.epoch_samples", "40",
            "--model.init_args.model.init_args.vocab_size", "16", "--trainer.max_steps", "8",
            "--trainer.enable_progress_bar", "false", *extra]


def checkpoints(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ckpt"))


def test_gpt_with_an_infinite_learning_rate_stops_at_the_step(faces: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # lr=inf: the first step writes inf into the weights, so the second batch's loss is NaN
    with pytest.raises(RunFailedError) as caught:
        lightning_cli(gpt_args(faces / "tokens", "--model.init_args.lr", ".inf"))
    message = str(caught.value)
    assert isinstance(caught.value, NonFiniteLossError) and "\n" not in message
    assert message.startswith("non-finite loss at global step 1 (epoch 0, batch 1): loss=nan")
    assert "lower the learning rate" in message.lower()
    assert checkpoints(tmp_path) == []  # neither last.ckpt nor interrupted.ckpt


def test_gpt_never_saves_non_finite_weights(faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # a periodic checkpoint after every step: the one after the first (inf) step is refused
    with pytest.raises(RunFailedError, match=r"refusing to save a checkpoint at global step 1: non-finite weights"):
        lightning_cli(gpt_args(faces / "tokens", "--model.init_args.lr", ".inf",
                               "--trainer.callbacks.init_args.every_n_train_steps", "1"))
    assert checkpoints(tmp_path) == []


def test_gan_with_an_infinite_learning_rate_stops_at_the_step(faces: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # VQGAN, manual optimisation with generator and discriminator from the first batch (2 steps per batch)
    with pytest.raises(NonFiniteLossError) as caught:
        lightning_cli(["fit", *fit_args(VQGAN_TINY), "--data.init_args.train", str(faces / "raw"),
                       "--model.init_args.disc_start", "0", "--model.init_args.optimizer.init_args.lr", ".inf",
                       "--trainer.max_steps", "8", "--trainer.enable_progress_bar", "false"])
    message = str(caught.value)
    assert message.startswith("non-finite loss at global step 2 (epoch 0, batch 1): ")
    assert "l2=nan" in message and "loss=nan" in message and "\n" not in message
    assert checkpoints(tmp_path) == []


def test_skip_mode_skips_and_counts(faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    poisoned = {2, 6}  # a data problem on two batches: their loss is NaN
    weights: dict[int, list[torch.Tensor]] = {}
    real_loss = ARModule.train_loss

    def train_loss(self: ARModule, batch: dict) -> torch.Tensor:
        step = self.trainer.global_step
        weights[step] = [p.detach().clone() for p in self.model.parameters()]
        loss = real_loss(self, batch)
        return loss * float("nan") if step in poisoned else loss

    monkeypatch.setattr(ARModule, "train_loss", train_loss)
    cli = lightning_cli(gpt_args(faces / "tokens", "--trainer.callbacks+=tokenforge.nonfinite_guard.NonFiniteGuard",
                                 "--trainer.callbacks.mode=skip", "--trainer.log_every_n_steps", "1"))
    guards = [c for c in cli.trainer.callbacks if isinstance(c, NonFiniteGuard)]
    assert len(guards) == 1 and guards[0].mode == "skip" and guards[0].skipped == 2
    assert cli.trainer.global_step == 8  # the run went on to the end
    for step in poisoned:  # no optimiser step from a skipped batch: the next batch starts from the same weights
        assert all(torch.equal(a, b) for a, b in zip(weights[step], weights[step + 1]))
    assert not all(torch.equal(a, b) for a, b in zip(weights[3], weights[4]))
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    counts = [float(r["train/nonfinite_skipped"]) for r in rows if r.get("train/nonfinite_skipped")]
    assert counts[:3] == [0.0, 0.0, 1.0] and counts[-1] == 2.0  # logged at every step, from the first skip on


def test_gpt_vocab_smaller_than_the_tokens_is_one_line(faces: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = gpt_args(faces / "tokens")
    args[args.index("--model.init_args.model.init_args.vocab_size") + 1] = "8"
    with pytest.raises(UsageError) as caught:
        lightning_cli(args)
    message = str(caught.value)
    assert "ids up to 15" in message and "vocab_size 8" in message and "\n" not in message
    assert "model.init_args.model.init_args.vocab_size to at least 16" in message


def test_generate_refuses_non_finite_weights(tmp_path: Path) -> None:
    gpt = GPT(vocab_size=16, seq_len=8, layout="sequence", dim=32, depth=1, num_heads=2, multiple_of=32)
    save_pretrained(gpt, tmp_path / "good")
    assert isinstance(load_module(str(tmp_path / "good")), GPT)
    with torch.no_grad():
        gpt.output.weight[0, 0] = float("nan")
    save_pretrained(gpt, tmp_path / "bad")
    with pytest.raises(UsageError, match=r"non-finite weights \(output.weight\)"):
        load_module(str(tmp_path / "bad"))


def test_interrupt_checkpoint_refuses_non_finite_weights(tmp_path: Path) -> None:
    class PoisonThenStop(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, *args) -> None:
            if trainer.global_step == 2:
                with torch.no_grad():
                    next(module.parameters()).fill_(float("nan"))
                raise RuntimeError("a failing step")

    torch.manual_seed(0)
    module = ARModule(GPT(vocab_size=16, seq_len=8, layout="sequence", dim=32, depth=1, num_heads=2,
                          multiple_of=32), lr=3e-3)
    rows = [{"ids": torch.randint(0, 16, (8,))} for _ in range(16)]
    trainer = pl.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[PoisonThenStop()])
    with pytest.raises(RuntimeError, match="a failing step"):
        trainer.fit(module, DataLoader(rows, batch_size=4))
    assert checkpoints(tmp_path) == []
