"""Nothing lost on interruption: Ctrl-C (KeyboardInterrupt) or an error during `fit` leaves ``interrupted.ckpt``
with the weights and position at that step, and ``ckpt_path`` resumes from it to the planned end."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.generators.autoregressive.module import ARModule


class StopAt(pl.Callback):
    def __init__(self, step: int, exception: BaseException) -> None:
        self.step, self.exception = step, exception

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise self.exception


def module() -> ARModule:
    torch.manual_seed(0)
    return ARModule(GPT(vocab_size=16, seq_len=8, layout="sequence", dim=32, depth=1, num_heads=2, multiple_of=32,
                        num_classes=2), lr=3e-3)


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    rows = [{"ids": torch.randint(0, 16, (8,), generator=g), "cls": torch.tensor(i % 2)} for i in range(16)]
    return DataLoader(rows, batch_size=4)


def trainer(root: Path, *callbacks: pl.Callback, max_steps: int = 12) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                      callbacks=list(callbacks))


@pytest.mark.parametrize("exception", [KeyboardInterrupt(), RuntimeError("a failing step")],
                         ids=["ctrl-c", "error"])
def test_interrupted_fit_saves_and_resumes(tmp_path: Path, exception: BaseException) -> None:
    m = module()
    expected = SystemExit if isinstance(exception, KeyboardInterrupt) else RuntimeError  # Lightning exits on Ctrl-C
    with pytest.raises(expected):
        trainer(tmp_path, StopAt(5, exception)).fit(m, loader())
    path = tmp_path / "checkpoints" / "interrupted.ckpt"
    saved = torch.load(path, weights_only=True)
    assert saved["global_step"] == 5
    for key, value in m.state_dict().items():
        assert torch.equal(saved["state_dict"][key], value), key  # the weights as they were at step 5

    resumed = module()
    t = trainer(tmp_path / "resumed")
    t.fit(resumed, loader(), ckpt_path=path)
    assert t.global_step == 12
    assert not (tmp_path / "resumed" / "checkpoints" / "interrupted.ckpt").exists()  # a finished run saves nothing


def test_no_checkpoint_before_the_first_step(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        trainer(tmp_path, StopAt(0, RuntimeError("early"))).fit(module(), loader())
    assert not (tmp_path / "checkpoints").exists()
