"""Codebooks under data parallelism: two CPU ranks (gloo) keep bit-identical EMA codebooks, equal to one process.

Part 1 drives `VectorQuantizer` by hand: k-means initialisation, EMA updates and dead-code restarts for a few
steps, each rank on its own (differently sized) part of a global batch; a single process runs the concatenated
batches. Tolerance: 0 (bit-identical) between the ranks and against the single process. The EMA sums are
accumulated in float64 before the all-reduce, so splitting a sum over ranks does not change its fp32 rounding;
k-means and restarts work on the gathered rows, in rank order, with rank 0's random draw.

Part 2 fits the tiny WavTokenizer (a GAN tokenizer with that EMA codebook) with Lightning's DDP strategy via
`tokenforge fit --trainer.devices 2`, and checks the codebook buffers stayed identical on both ranks.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from wavtokenizer_ddp_fit import fit_tiny_wavtokenizer_on_two_ranks

from tokenforge.codebook_health import CodebookHealth
from tokenforge.tokenizers.quantizers import VectorQuantizer

STEPS, DIM, CODES = 6, 8, 32
SPLIT = (3, 2)  # items per rank in each step's global batch of 5 (unequal on purpose)
CODEBOOK_STATE = ("embedding.weight", "cluster_size", "embed_avg", "inited")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_quantizer() -> VectorQuantizer:
    """EnCodec/WavTokenizer-style codebook; a high dead-code threshold so that restarts happen every step."""
    return VectorQuantizer(CODES, DIM, ema=True, decay=0.8, kmeans_init=True, kmeans_iters=4,
                           dead_code_threshold=1.5, beta=1.0).train()


def global_batch(step: int) -> torch.Tensor:
    """Step ``step``'s global batch ``[5, DIM, 12]``: a drifting mixture of 6 clusters (fixed by the step)."""
    g = torch.Generator().manual_seed(1000 + step)
    centres = torch.randn(6, DIM, generator=g) * 3 + 0.2 * step
    pick = torch.randint(0, 6, (sum(SPLIT), 12), generator=g)
    return (centres[pick] + 0.3 * torch.randn(sum(SPLIT), 12, DIM, generator=g)).permute(0, 2, 1)


def train(vq: VectorQuantizer, rank: int | None) -> tuple[dict[str, torch.Tensor], float]:
    """STEPS training forwards on the whole global batch (rank None) or on this rank's items."""
    replaced = 0.0
    for step in range(STEPS):
        batch = global_batch(step)
        if rank is not None:
            start = sum(SPLIT[:rank])
            batch = batch[start:start + SPLIT[rank]]
        replaced += float(vq(batch).metrics["dead_codes_replaced"])
    state = vq.state_dict()
    return {name: state[name].clone() for name in CODEBOOK_STATE}, replaced


def _rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        torch.manual_seed(rank)  # different seeds per rank: rank 0's random draws must win everywhere
        vq = make_quantizer()
        torch.manual_seed(0)  # the single process uses seed 0 too
        state, replaced = train(vq, rank)
        torch.save({"state": state, "replaced": replaced}, Path(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_hold_the_single_process_codebook_bit_for_bit(tmp_path: Path) -> None:
    mp.start_processes(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    vq = make_quantizer()
    torch.manual_seed(0)  # after construction, as on the ranks
    single, replaced = train(vq, None)
    assert replaced > 0 and ranks[0]["replaced"] == ranks[1]["replaced"] == replaced  # restarts were exercised
    assert float(single["inited"]) == 1.0
    for name in CODEBOOK_STATE:
        torch.testing.assert_close(ranks[0]["state"][name], ranks[1]["state"][name], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0]["state"][name], single[name], rtol=0, atol=0, msg=name)
    # the codebook moved away from its k-means start: the EMA steps are part of what was compared
    assert single["cluster_size"].sum() > 0 and single["embedding.weight"].abs().sum() > 0


# ---------------------------------------------------------------------------------- Lightning DDP, GAN tokenizer


class CodebookGather(pl.Callback):
    """At the end of training, rank 0 saves every rank's codebook buffers (gathered) and the generator steps."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        vq = module.model.quantizer
        gathered = {name: trainer.strategy.all_gather(getattr(vq, name).detach().clone())
                    for name in ("cluster_size", "embed_avg", "inited")}
        gathered["embedding.weight"] = trainer.strategy.all_gather(vq.embedding.weight.detach().clone())
        health = next(c for c in trainer.callbacks if isinstance(c, CodebookHealth))
        windows = torch.tensor([[row["vectors"], row["perplexity"], row["dead_codes"]] for row in health.history])
        windows = trainer.strategy.all_gather(windows)
        if trainer.is_global_zero:
            torch.save({"codebook": gathered, "generator_steps": int(module.generator_step), "health": windows},
                       self.out)


@pytest.mark.slow  # three interpreters start (pytest, two ranks): 41 s on the shared 2-core CPU, 17 s of it CPU time
def test_gan_tokenizer_fit_under_lightning_ddp_keeps_codebooks_identical(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "codebooks.pt"
    run = fit_tiny_wavtokenizer_on_two_ranks(
        shared_data, tmp_path, "--trainer.max_steps", "3", "--model.init_args.pretrain_mel_steps", "1",
        "--data.init_args.batch_size", "2", "--model.init_args.evaluate_pesq", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "test_codebook_ddp.CodebookGather",
        "--trainer.callbacks.out", str(out), "--trainer.callbacks+=tokenforge.codebook_health.CodebookHealth",
        "--trainer.callbacks.every_n_steps", "1", env={"OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    result = torch.load(out)
    # max_steps 3 optimiser steps: 1 mel-only batch (1 step), then 1 GAN batch (generator + discriminators)
    assert result["generator_steps"] == 2
    for name, both in result["codebook"].items():
        assert both.shape[0] == 2, name
        torch.testing.assert_close(both[0], both[1], rtol=0, atol=0, msg=name)
    assert float(result["codebook"]["inited"][0]) == 1.0  # k-means ran (on both ranks' rows)
    health = result["health"]  # [rank, window, (vectors, perplexity, dead codes)]: one window per batch
    assert health.shape == (2, 2, 3) and torch.equal(health[0], health[1])  # the histogram is the global one
    assert (health[0, :, 0] > 0).all() and (health[0, :, 1] >= 1).all()
