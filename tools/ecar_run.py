#!/usr/bin/env python
"""Short E-CAR vs DiT run on the same real latents (used by tools/gpu/ecar.sh; also runs on CPU with small numbers).

    python tools/ecar_run.py --data .device/data --work /tmp/ecar_work --out $OUT [--device cuda] [--kl-steps 600]
        [--gen-steps 1500] [--dim 256] [--depth 6]

LFW face / non-face crops (two classes, 32 px) -> image shards -> a KL autoencoder trained with the shared
autoencoder+GAN loop (`KLAutoencoderModule`, f=2 -> 4 x 16 x 16 latents) -> latent shards (latents.npy) ->
`tokenforge fit` of E-CAR (stages 1-2-4-8-16) and of the FlowDiT baseline at the same width/depth, bf16, EMA ->
held-out flow loss, sample grids from both (``tokenforge generate``) and their generation time per image.
Writes ``$OUT/{kl,ecar,dit}/metrics.csv``, ``$OUT/{ecar,dit}_samples/grid.png`` and ``$OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import torch


def fit(config: str, logs: Path, name: str, overrides: list[str]) -> Path:
    from tokenforge.cli import lightning_cli
    from tokenforge.config_models import fit_args

    lightning_cli(args=["fit", *fit_args(config), "--trainer.logger.init_args.save_dir", str(logs),
                        "--trainer.logger.init_args.name", name, "--trainer.enable_progress_bar", "false",
                        *overrides])
    return max((logs / name).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)


def curve(logs: Path, name: str, key: str) -> list[float]:
    paths = list((logs / name).rglob("metrics.csv"))
    if not paths:  # nothing logged yet (fewer steps than log_every_n_steps)
        return []
    path = max(paths, key=lambda p: p.stat().st_mtime)
    return [float(r[key]) for r in csv.DictReader(open(path)) if r.get(key)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".device/data")
    p.add_argument("--work", default="/tmp/ecar_work")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--kl-steps", type=int, default=600)
    p.add_argument("--gen-steps", type=int, default=1500)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--kl-minutes", type=int, default=2, help="time cap of the autoencoder fit")
    p.add_argument("--gen-minutes", type=int, default=2, help="time cap of each generator fit")
    args = p.parse_args()
    from tokenforge.demo_stages import make_face_shards
    from tokenforge.data.tokens import encode_shards
    from tokenforge.generate import main as generate

    work, out = Path(args.work), Path(args.out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    gpu = args.device == "cuda"
    trainer = ["--trainer.accelerator", "gpu" if gpu else "cpu", "--trainer.precision", "bf16-mixed" if gpu else "32-true"]
    make_face_shards(Path(args.data), work)
    summary: dict = {"device": args.device}

    t = time.time()
    kl_ckpt = fit("configs/tokenizers/klvae/tiny.yaml", out / "logs", "kl", [
        *trainer, "--trainer.precision", "32-true", "--data.init_args.train", str(work / "raw"),
        "--data.init_args.batch_size", "32", "--data.init_args.epoch_samples", "3200",
        "--trainer.max_steps", str(args.kl_steps),
        "--trainer.max_time", f"00:00:{args.kl_minutes:02d}:00", "--model.init_args.disc_start", str(args.kl_steps // 2),
        "--model.init_args.model.init_args.block_out_channels", "[64, 128]",
        "--model.init_args.model.init_args.norm_num_groups", "32"])
    summary["kl_seconds"] = time.time() - t
    summary["kl_l1"] = curve(out / "logs", "kl", "train/l1")[-1:]
    from tokenforge.hub import from_pretrained, save_pretrained

    kl = from_pretrained(kl_ckpt)
    with torch.no_grad():  # scale the latents to unit std, as LDM/MAR do (0.18215 / 0.2325)
        import glob

        import webdataset as wds

        from tokenforge.data.image import Decoder
        decode = Decoder(32, train=False)
        images = torch.stack([decode(s)["image"] for s in wds.WebDataset(
            sorted(glob.glob(str(work / "raw" / "train-*.tar"))), shardshuffle=False)])
        std = kl.vae.encode(images).latent_dist.mode().std().item()
    spec = kl.spec()
    spec["init_args"]["scaling_factor"] = 1.0 / std
    from tokenforge.config import build

    scaled = build(spec)
    scaled.load_state_dict(kl.state_dict())
    save_pretrained(scaled.eval(), work / "kl")
    encode_shards(str(work / "kl"), work / "raw", work / "latents", image_size=32, latents=True, progress=False,
                  device=args.device)
    summary["latent_scale"] = 1.0 / std

    common = [*trainer, "--data.init_args.train", str(work / "latents"), "--data.init_args.val", str(work / "latents"),
              "--trainer.max_steps", str(args.gen_steps),
              "--trainer.max_time", f"00:00:{args.gen_minutes:02d}:00", "--data.init_args.batch_size", "64",
              "--data.init_args.epoch_samples", "6400", "--model.init_args.optimizer.init_args.lr", "5e-4",
              "--model.init_args.ema_decay", "0.995", "--model.init_args.lr_scheduler.init_args.warmup_steps", "100",
              "--trainer.check_val_every_n_epoch", "1"]
    size = ["--model.init_args.model.init_args.dim", str(args.dim), "--model.init_args.model.init_args.depth",
            str(args.depth), "--model.init_args.model.init_args.num_heads", str(max(1, args.dim // 64)),
            "--model.init_args.model.init_args.latent_channels", "4"]
    runs = {
        "ecar": ("configs/generators/ecar/tiny.yaml", ["--model.init_args.model.init_args.scales", "[1, 2, 4, 8, 16]",
                                                       "--model.init_args.model.init_args.head_width", str(args.dim),
                                                       "--model.init_args.model.init_args.head_depth", "3"]),
        "dit": ("configs/generators/ecar/dit_tiny.yaml", ["--model.init_args.model.init_args.latent_size", "16"]),
    }
    for name, (config, extra) in runs.items():
        t = time.time()
        ckpt = fit(config, out / "logs", name, [*common, *size, *extra])
        summary[f"{name}_fit_seconds"] = time.time() - t
        summary[f"{name}_train_loss"] = curve(out / "logs", name, "train/loss")
        summary[f"{name}_val_loss"] = curve(out / "logs", name, "val/loss")
        model = from_pretrained(ckpt)
        summary[f"{name}_params"] = sum(q.numel() for q in model.parameters())
        steps = ["--steps", "10"] if name == "ecar" else ["--steps", "50"]
        t = time.time()
        generate(["--generator", str(ckpt), "--tokenizer", str(work / "kl"), "--n", str(args.samples),
                  "--classes", "0", "1", "--cfg", "1.5", *steps, "--seed", "0", "--device", args.device,
                  "--out", str(out / f"{name}_samples")])
        summary[f"{name}_generate_seconds_per_image"] = (time.time() - t) / args.samples
        for path in (out / "logs" / name).rglob("*.ckpt"):
            path.unlink()  # keep curves and samples, not weights
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: (v[-3:] if isinstance(v, list) else v) for k, v in summary.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
