"""Two CPU ranks (gloo): validation is disjoint across ranks and never empty on a rank (even with one shard);
training never hangs with few shards."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tokenforge.data.datamodule import ShardDataModule
from tokenforge.data.shards import make_shards


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, world: int, port: int, shards: str, one_shard: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from datetime import timedelta

    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        dm = ShardDataModule(train=one_shard, val=shards, modality="image", batch_size=2, num_workers=2,
                             image_size=16, epoch_samples=12, shuffle_buffer=4)
        dm.setup("fit")
        val_keys = [k for batch in dm.val_dataloader() for k in batch["__key__"]]
        steps = 0
        for batch in dm.train_dataloader():  # 1 shard, 2 ranks x 2 workers: each step all-reduces, so a
            total = torch.tensor([float(batch["image"].shape[0])])  # rank that ran dry would hang the other
            dist.all_reduce(total)
            steps += 1
        # one validation shard for two ranks: both must get samples (a rank with no batch hangs sync_dist metrics)
        few = ShardDataModule(train=one_shard, val=str(Path(shards, "val-000000.tar")), modality="image",
                              batch_size=2, num_workers=2, image_size=16, val_batch_size=3)
        few.setup("fit")
        few_keys = [k for batch in few.val_dataloader() for k in batch["__key__"]]
        dist.barrier()
        Path(out, f"rank{rank}.json").write_text(json.dumps({"val": val_keys, "steps": steps, "few": few_keys}))
    finally:
        dist.destroy_process_group()


def test_two_ranks_disjoint_validation_and_no_hang(shared_data: Path, tmp_path: Path) -> None:
    manifest = make_shards("images", shared_data / "images/faces", tmp_path / "shards", val_fraction=0.2,
                           shard_size=10, format="png", progress=False)
    assert len(manifest["splits"]["val"]["shards"]) == 4
    one_shard = str(tmp_path / "shards/train-000000.tar")
    mp.start_processes(_rank, args=(2, _free_port(), str(tmp_path / "shards"), one_shard, str(tmp_path)),
                       nprocs=2, join=True, start_method="spawn")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    first, second = (set(r["val"]) for r in results)
    assert first and second and not first & second  # each rank its own shards
    assert sorted(first | second) == sorted(manifest["splits"]["val"]["keys"])  # together: every sample once
    assert len(results[0]["val"]) + len(results[1]["val"]) == 40
    assert results[0]["steps"] == results[1]["steps"] == 3  # ceil(12 / (2 x 2)) batches per rank, no hang
    first, second = (r["few"] for r in results)  # 1 shard of 10 samples, 2 ranks: 5 each, disjoint
    assert len(first) == len(second) == 5 and not set(first) & set(second)
    assert sorted(first + second) == sorted(manifest["splits"]["val"]["keys"][:10])
