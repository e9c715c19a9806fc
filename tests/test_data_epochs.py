"""Training epochs draw new data and runs repeat: with DataLoader workers each epoch used to replay the first
exactly (fresh workers restarted their generators); now the pipeline's seed includes the trainer's epoch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tokenforge.data.datamodule import ShardDataModule
from tokenforge.data.shards import make_shards


@pytest.fixture(scope="module")
def speech_shards(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("speech_epochs")
    make_shards("audio", f"{shared_data}/speech24k/a*.flac", out, shard_size=4, progress=False, sample_rate=24000)
    return out


def epochs(shards: Path, workers: int, resampled: bool, count: int = 2, trainer_epoch: int | None = None
           ) -> list[torch.Tensor]:
    """``count`` passes over a fresh training loader (random crops and gain), each as one tensor."""
    dm = ShardDataModule(str(shards), modality="audio", batch_size=4, num_workers=workers, segment_samples=6000,
                         gain_db=3.0, epoch_samples=8, shuffle_buffer=8, resampled=resampled)
    if trainer_epoch is not None:
        dm.trainer = SimpleNamespace(current_epoch=trainer_epoch, world_size=1)
    loader = dm.train_dataloader()
    return [torch.cat([batch["audio"] for batch in loader]) for _ in range(count)]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("resampled", [True, False])
def test_epochs_differ_and_runs_repeat(speech_shards: Path, workers: int, resampled: bool) -> None:
    first, second = epochs(speech_shards, workers, resampled)
    assert first.shape == second.shape == (8, 6000)
    assert not torch.equal(first, second)  # a new epoch: other crops, gains or clips
    again = epochs(speech_shards, workers, resampled)
    assert torch.equal(again[0], first) and torch.equal(again[1], second)  # the same seed: the same run
    # a resumed run (fresh module, trainer at epoch 1) draws epoch 1's data, not epoch 0's
    (resumed,) = epochs(speech_shards, workers, resampled, count=1, trainer_epoch=1)
    assert torch.equal(resumed, second)
