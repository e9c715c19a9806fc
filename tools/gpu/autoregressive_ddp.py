#!/usr/bin/env python
"""GPT training throughput with Lightning DDP over token shards: ``--devices 1`` vs ``--devices 2``.

Writes synthetic 16x16 token shards (ids are random: this measures speed, not learning), trains GPT-B (bf16,
compiled) through `ARModule` + `ShardDataModule` (webdataset splits shards by node and worker), and prints
tokens/s over all ranks from the steps after warm-up. ``--size tiny --accelerator cpu`` is a CPU smoke run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import webdataset as wds

from tokenforge.data.datamodule import ShardDataModule
from tokenforge.data.shards import npy_bytes
from tokenforge.generators.autoregressive.bench import SIZES
from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.generators.autoregressive.module import ARModule


class Throughput(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.tokens = warmup, None, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            self.start = time.perf_counter()
        elif self.start is not None:
            self.tokens += batch["ids"].numel() * trainer.world_size

    def on_train_end(self, trainer, module) -> None:
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        if trainer.is_global_zero and self.start is not None:
            rate = self.tokens / (time.perf_counter() - self.start)
            print(f"devices={trainer.world_size} tokens/s={rate:,.0f} (all ranks, after {self.warmup} warm-up steps)")


def write_shards(folder: Path, count: int, side: int, vocab: int, classes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with wds.ShardWriter(str(folder / "train-%06d.tar"), maxcount=max(1, count // 8), verbose=0) as sink:
        for i in range(count):
            sink.write({"__key__": f"{i:06d}", "ids.npy": npy_bytes(rng.integers(0, vocab, (side, side)).astype(np.int16)),
                        "cls": str(int(rng.integers(0, classes))).encode()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--size", default="B", choices=sorted(SIZES))
    p.add_argument("--accelerator", default="gpu")
    p.add_argument("--batch", type=int, default=64, help="per device")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--shards", default="/tmp/ar_ddp_tokens")
    args = p.parse_args()
    size = dict(SIZES[args.size])
    side = int(size["seq_len"] ** 0.5)
    if not Path(args.shards, "train-000000.tar").exists():
        write_shards(Path(args.shards), 4096, side, size["vocab_size"], size["num_classes"])
    gpu = args.accelerator == "gpu"
    module = ARModule(GPT(**size), lr=1e-4, compile=gpu)
    data = ShardDataModule(args.shards, modality="tokens", batch_size=args.batch, num_workers=4 if gpu else 0,
                           epoch_samples=args.batch * args.devices * args.steps, shuffle_buffer=256, pin_memory=gpu)
    trainer = pl.Trainer(accelerator=args.accelerator, devices=args.devices,
                         strategy="ddp" if args.devices > 1 else "auto", precision="bf16-mixed" if gpu else "32-true",
                         max_steps=args.steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Throughput(args.warmup)])
    trainer.fit(module, datamodule=data)


if __name__ == "__main__":
    main()
