"""Training speed and peak memory of a LlamaGen-size GPT under DDP/one device or FSDP (tokenforge.fsdp), on GPUs.

One line of JSON per run: size, strategy, GPUs, batch per GPU, tokens/s (all GPUs, after warm-up steps), peak
memory allocated per GPU (the largest rank's), or ``"oom"``. Random token grids (speed and memory do not depend
on the ids). One GPU:

    python tools/gpu/fsdp_bench.py --size xxl --strategy fsdp --batch 32
Several GPUs (one process each):

    torchrun --nproc_per_node 8 tools/gpu/fsdp_bench.py --size xl --strategy fsdp --batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

SIZES = {"tiny": (64, 2, 4), "b": (768, 12, 12), "l": (1024, 24, 16), "xl": (1280, 36, 20), "xxl": (1536, 48, 24),
         "3b": (3200, 24, 32)}  # LlamaGen's dim, depth, heads (tiny: a CPU check of the script)


class RandomGrids(torch.utils.data.IterableDataset):
    def __iter__(self):
        gen = torch.Generator().manual_seed(int(os.environ.get("RANK", 0)))
        while True:
            yield {"ids": torch.randint(0, 16384, (16, 16), generator=gen), "cls": torch.randint(0, 1000, (),
                                                                                                   generator=gen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="xl")
    parser.add_argument("--strategy", choices=("fsdp", "ddp"), default="fsdp")
    parser.add_argument("--batch", type=int, default=32, help="per GPU")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--no-checkpointing", action="store_true", help="FSDP without activation checkpointing")
    args = parser.parse_args()

    import lightning.pytorch as pl

    from tokenforge.fsdp import FullyShardedStrategy
    from tokenforge.generators.autoregressive.gpt import GPT
    from tokenforge.generators.autoregressive.module import ARModule

    devices = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    cuda = torch.cuda.is_available()  # a CPU run (--size tiny) only checks that the script works
    dim, depth, heads = SIZES[args.size]
    torch.manual_seed(0)
    module = ARModule(GPT(vocab_size=16384, seq_len=256, dim=dim, depth=depth, num_heads=heads, num_classes=1000))
    params = sum(p.numel() for p in module.model.parameters())
    times: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, *_) -> None:
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    strategy = (FullyShardedStrategy(activation_checkpointing=not args.no_checkpointing) if args.strategy == "fsdp"
                else ("ddp" if devices > 1 else "auto"))
    trainer = pl.Trainer(accelerator="gpu" if cuda else "cpu", devices=devices, strategy=strategy,
                         precision="bf16-mixed",
                         max_steps=args.steps, gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Clock()])
    result = {"size": args.size, "params_m": round(params / 1e6), "strategy": args.strategy, "gpus": devices,
              "batch_per_gpu": args.batch, "activation_checkpointing": args.strategy == "fsdp"
              and not args.no_checkpointing, "device": torch.cuda.get_device_name() if cuda else "cpu"}
    try:
        trainer.fit(module, torch.utils.data.DataLoader(RandomGrids(), batch_size=args.batch, num_workers=2))
        seconds = (times[-1] - times[args.warmup - 1]) / (len(times) - args.warmup)
        peak = torch.tensor(float(torch.cuda.max_memory_allocated() if cuda else 0), device=module.device)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
        result.update(tokens_per_s=round(args.batch * devices * 256 / seconds), step_s=round(seconds, 4),
                      peak_gib_per_gpu=round(float(peak) / 2**30, 2))
    except torch.OutOfMemoryError:
        result.update(tokens_per_s="oom", peak_gib_per_gpu="oom")
    if trainer.is_global_zero:
        print("FSDP_BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
