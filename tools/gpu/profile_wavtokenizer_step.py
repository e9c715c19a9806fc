#!/usr/bin/env python
"""Where a WavTokenizer training batch spends its time on a GPU (short_75.yaml's model, batch 16 x 2 s, bf16).

Prints: batches/s of the audio shard loader alone; ms per phase of one batch (generator forward, mel-only
backward + step, discriminator step, adversarial generator step) timed with CUDA synchronisation; the GPU
kernel time of one full GAN batch against its wall time (launch-bound or not) and the top kernels.
    python tools/gpu/profile_wavtokenizer_step.py --shards DIR    # after `source tools/gpu/env.sh`
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tokenforge.benchmarking import kernel_report
from tokenforge.config import build
from tokenforge.config_models import compose

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tokenizers" / "wavtokenizer" / "short_75.yaml"


def loader_rate(shards: str, batch: int, workers: int, n: int = 60) -> float:
    from tokenforge.data.datamodule import ShardDataModule

    dm = ShardDataModule(shards, modality="audio", batch_size=batch, num_workers=workers, segment_samples=48000,
                         gain_db=3.0, epoch_samples=batch * (n + 20), shuffle_buffer=200)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    for _ in range(10):
        next(it)
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", help="audio shards (tokenforge shards make audio); skip the loader test if absent")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cuda", help="cpu only for a smoke run of this script")
    args = ap.parse_args()
    if args.shards:
        for workers in (args.workers, 2 * args.workers):
            print(f"loader: {loader_rate(args.shards, args.batch, workers):.1f} batches/s with {workers} workers",
                  flush=True)

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    module = build(compose(CONFIG)["model"]).to(device)
    module.hparams.evaluate_pesq = False
    gen = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    disc = torch.optim.AdamW([p for d in module.discriminators for p in d.parameters()], lr=1e-5)
    x = (0.1 * torch.randn(args.batch, 48000, device=device)).clamp(-1, 1)
    bw = torch.zeros(1, dtype=torch.long, device=device)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731 (Lightning's bf16-mixed)

    def forward():
        with autocast():
            return module.model(x, bw)

    def mel_step(out):
        with autocast():
            loss = module.generator_phase(x, out.x_hat, out.aux_loss, bw, adversarial=False).loss
        gen.zero_grad()
        loss.backward()
        gen.step()

    def disc_step(out):
        with autocast():
            loss = module.discriminator_phase(x, out.x_hat.detach(), bw).loss
        disc.zero_grad()
        loss.backward()
        disc.step()

    def gan_step(out):
        with autocast():
            loss = module.generator_phase(x, out.x_hat, out.aux_loss, bw, adversarial=True).loss
        gen.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), 1000.0)
        gen.step()

    def timed(phase) -> float:
        for _ in range(3):
            phase()
        sync()
        start = time.perf_counter()
        for _ in range(args.repeats):
            phase()
        sync()
        return (time.perf_counter() - start) / args.repeats * 1e3

    f = timed(forward)
    fm = timed(lambda: mel_step(forward()))
    fd = timed(lambda: disc_step(forward()))
    fg = timed(lambda: gan_step(forward()))
    full = timed(lambda: (lambda o: (disc_step(o), gan_step(o)))(forward()))
    print(f"per batch of {args.batch} x 2 s: generator forward {f:.1f} ms; + mel backward/step {fm - f:.1f} ms; "
          f"discriminator step {fd - f:.1f} ms; adversarial generator backward/step {fg - f:.1f} ms; "
          f"full GAN batch {full:.1f} ms ({1e3 / full:.1f} batches/s); mel-only batch {fm:.1f} ms", flush=True)
    for name, d in (("mpd", module.mpd), ("mrd", module.mrd), ("dac", module.dac)):
        def one(d=d):
            with autocast():
                out = d(x, bw) if name != "dac" else d(x)
                loss = sum(o.float().mean() for o in out[0])
            loss.backward()
        print(f"  {name}: forward+backward on the batch {timed(one):.1f} ms", flush=True)

    if device.type == "cuda":
        kernel_ms, table = kernel_report(lambda: (lambda o: (disc_step(o), gan_step(o)))(forward()), rows=25)
        print(f"one GAN batch: {full:.1f} ms wall, of which GPU kernels {kernel_ms:.1f} ms")
        print(table)


if __name__ == "__main__":
    main()
