"""GAN training under DDP: `tokenforge fit` trains the tiny WavTokenizer config with its three discriminators in
two CPU processes (gloo), as a researcher would with ``--trainer.devices N`` on GPUs.

Each backward pass of a GAN step uses only some parameters (generator or discriminators), which DDP's default
refuses on the first step; `TrainingModule.partial_backward` makes the strategy allow it. The ranks see
different shards, so equal weights on both ranks after training show that the gradients were averaged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from tokenforge.tokenizers.wavtokenizer.module import WavTokenizerModule
from tokenforge.config_models import fit_args

TINY = Path(__file__).resolve().parents[1] / "configs" / "tokenizers" / "wavtokenizer" / "tiny.yaml"


def digest(module: WavTokenizerModule) -> torch.Tensor:
    """One checksum per network: the generator and the three discriminators."""
    return torch.stack([torch.cat([p.detach().double().flatten() for p in m.parameters()]).abs().sum()
                        for m in (module.model, module.mpd, module.mrd, module.dac)])


class RankDigest(pl.Callback):
    """At the start and end of training, rank 0 saves every rank's network checksums (and the generator steps)."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.initial = trainer.strategy.all_gather(digest(module))

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        final = trainer.strategy.all_gather(digest(module))
        if trainer.is_global_zero:
            torch.save({"initial": self.initial, "final": final, "generator_steps": int(module.generator_step)},
                       self.out)


@pytest.mark.slow
def test_gan_module_trains_under_ddp_with_synchronised_weights(shared_data: Path, tmp_path: Path) -> None:
    from tokenforge.data.shards import make_shards

    shards = tmp_path / "shards"
    make_shards("audio", shared_data / "speech24k", shards, val_fraction=0.1, progress=False, sample_rate=24000,
                segment_seconds=None, min_seconds=0.5, silence_db=-60.0, shard_size=12)
    out = tmp_path / "digests.pt"
    tests = str(Path(__file__).parent)  # the ranks import RankDigest from here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-m", "tokenforge", "fit", *fit_args(TINY), "--trainer.devices", "2",
         "--trainer.strategy", "ddp", "--trainer.max_steps", "10", "--model.init_args.pretrain_mel_steps", "2",
         "--data.init_args.train", str(shards), "--data.init_args.val", str(shards),
         "--trainer.limit_val_batches", "0", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks+=test_gan_ddp.RankDigest",
         "--trainer.callbacks.out", str(out)],
        env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = torch.load(out)
    initial, final = result["initial"], result["final"]
    assert final.shape == (2, 4)  # ranks x (generator, MPD, MRD, DAC)
    torch.testing.assert_close(initial[0], initial[1], rtol=0, atol=0)  # same seed, same start
    torch.testing.assert_close(final[0], final[1], rtol=1e-9, atol=0)  # gradients averaged: still equal
    assert ((final[0] - initial[0]).abs() > 1e-6 * initial[0]).all(), (initial, final)  # every network trained
    assert result["generator_steps"] == 6  # 2 mel-only batches (1 optimiser step each) + 4 GAN batches (2 each)
