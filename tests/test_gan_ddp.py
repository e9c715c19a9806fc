"""GAN training under DDP: `tokenforge fit` trains the tiny WavTokenizer config with its three discriminators in
two CPU processes (gloo), as a researcher would with ``--trainer.devices N`` on GPUs.

Each backward pass of a GAN step uses only some parameters (generator or discriminators), which DDP's default
refuses on the first step; `TrainingModule.partial_backward` makes the strategy allow it. The ranks see
different shards, so equal weights on both ranks after training show that the gradients were averaged.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from wavtokenizer_ddp_fit import fit_tiny_wavtokenizer_on_two_ranks

from tokenforge.tokenizers.wavtokenizer.module import WavTokenizerModule


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
    out = tmp_path / "digests.pt"
    run = fit_tiny_wavtokenizer_on_two_ranks(
        shared_data, tmp_path, "--trainer.max_steps", "10", "--model.init_args.pretrain_mel_steps", "2",
        "--trainer.callbacks+=test_gan_ddp.RankDigest", "--trainer.callbacks.out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    result = torch.load(out)
    initial, final = result["initial"], result["final"]
    assert final.shape == (2, 4)  # ranks x (generator, MPD, MRD, DAC)
    torch.testing.assert_close(initial[0], initial[1], rtol=0, atol=0)  # same seed, same start
    torch.testing.assert_close(final[0], final[1], rtol=1e-9, atol=0)  # gradients averaged: still equal
    assert ((final[0] - initial[0]).abs() > 1e-6 * initial[0]).all(), (initial, final)  # every network trained
    assert result["generator_steps"] == 6  # 2 mel-only batches (1 optimiser step each) + 4 GAN batches (2 each)
