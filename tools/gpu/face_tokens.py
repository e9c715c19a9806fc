"""Token shards from a real tokenizer for the generator runs: LFW crops -> a VQGAN trained here -> 8x8 ids.

    python tools/gpu/face_tokens.py --data .device/data --work /tmp/face_tokens --seconds 120 --accel gpu

Writes ``WORK/raw`` (labelled image shards, face / nonface), ``WORK/vqgan`` (the tokenizer, tokenforge folder),
``WORK/tokens`` (token shards with labels) and ``WORK/vqgan_curve.txt`` (the tokenizer's held-out PSNR).
The GPT and ENAT GPU scripts share it so both generators train on the same ids.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(".device/data"))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seconds", type=int, default=120, help="VQGAN training time")
    parser.add_argument("--accel", default="gpu")
    args = parser.parse_args()

    import torch

    from tokenforge.cli import lightning_cli
    from tokenforge.demo_stages import make_face_shards
    from tokenforge.data.tokens import encode_shards
    from tokenforge.hub import from_pretrained, save_pretrained

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    make_face_shards(args.data, work)

    start = time.time()
    hh, mm, ss = args.seconds // 3600, args.seconds // 60 % 60, args.seconds % 60
    lightning_cli(args=[
        "fit", "--config", "configs/tokenizers/vqgan/base.yaml", "--config", "configs/tokenizers/vqgan/tiny.yaml",
        "--data.init_args.train", str(work / "raw"), "--data.init_args.val", str(work / "raw"),
        "--data.init_args.batch_size", "32", "--data.init_args.epoch_samples", "3200",
        "--data.init_args.shuffle_buffer", "160", "--data.init_args.num_workers", "4",
        "--model.init_args.model.init_args.ch", "64", "--model.init_args.disc_start", "1500",
        "--trainer.accelerator", args.accel, "--trainer.max_steps", "100000",
        "--trainer.max_time", f"00:{hh:02d}:{mm:02d}:{ss:02d}", "--trainer.val_check_interval", "100",
        "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "20",
        "--trainer.default_root_dir", str(work), "--trainer.logger.init_args.save_dir", str(work / "logs"),
        "--trainer.enable_progress_bar", "false",
    ])
    ckpt = next((work / "logs").rglob("last.ckpt"))
    tokenizer = from_pretrained(ckpt)
    save_pretrained(tokenizer, work / "vqgan")
    rows = list(csv.DictReader(open(next((work / "logs").rglob("metrics.csv")))))
    curve = [(r["step"], r["val/psnr"]) for r in rows if r.get("val/psnr")]
    (work / "vqgan_curve.txt").write_text(
        f"VQGAN fit {time.time() - start:.0f} s; held-out PSNR by step: "
        + ", ".join(f"{s}:{float(p):.2f}" for s, p in curve) + "\n")
    device = "cuda" if args.accel == "gpu" and torch.cuda.is_available() else "cpu"
    summary = encode_shards(str(work / "vqgan"), work / "raw", work / "tokens", image_size=32, device=device,
                            progress=False)
    counts = {split: info["count"] for split, info in summary["splits"].items()}
    print(json.dumps({"tokens": str(work / "tokens"), "vocab": tokenizer.vocab_size, "counts": counts}))
    print((work / "vqgan_curve.txt").read_text())


if __name__ == "__main__":
    main()
