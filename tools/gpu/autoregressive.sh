#!/usr/bin/env bash
# Autoregressive generators on one H200 (~8 min): GPU tests, `bench generator ar`, a short GPT run on token
# shards from a real tokenizer (NLL curve + decoded samples), and 1-vs-2-GPU DDP throughput when 2 GPUs exist.
# Run from the repo root; the lead copies ../shared/data and ../shared/fixtures to .device/.
source tools/gpu/env.sh   # wheels + tokenforge namespace links
set -x
OUT=${OUT:-/tmp/ar_out}; mkdir -p "$OUT"
export TOKENFORGE_SHARED=$PWD/.device
W=/tmp/ar_work; rm -rf "$W"; mkdir -p "$W"

# 1. GPU tests + parity (1 min)
timeout 120 python -m pytest tests/test_autoregressive_gpt.py -q -x -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/tests.txt"
timeout 60 python tools/check_parity.py .device/fixtures/llamagen | tee "$OUT/parity_llamagen.txt"

# 2. benchmark table (GPT-B, bf16 + fp32, batch 1/64, cache/compile; training fwd+bwd) (~3 min)
timeout 240 python -m tokenforge.cli bench generator ar --size B --repeats 3 --json "$OUT/bench.json" 2>&1 \
  | tail -20 | tee "$OUT/bench.md"

# 3. short GPT run on tokens of a real tokenizer: LFW faces -> VQGAN (k-means codebook) -> 8x8 token grids (~3 min)
timeout 240 python - "$W" "$OUT" <<'PY' 2>&1 | tail -30 | tee "$OUT/train_run.txt"
import csv, glob, json, sys, time
from pathlib import Path
import torch, webdataset as wds
from tokenforge.data.shards import make_shards
from tokenforge.data.tokens import encode_shards
from tokenforge.data.image import Decoder
from tokenforge.hub import save_pretrained
from tokenforge.tokenizers.vqgan.model import VQGAN
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.cli import lightning_cli
w, out = Path(sys.argv[1]), Path(sys.argv[2])
faces = sorted(Path(".device/data/images/faces").glob("*.png"))
with open(w / "faces.csv", "w", newline="") as h:
    c = csv.writer(h); c.writerow(["path", "label"])
    for p in faces: c.writerow([str(p.resolve()), "face" if p.name.startswith("face") else "nonface"])
make_shards("images", w / "faces.csv", w / "raw", val_fraction=0.2, format="png", progress=False)
torch.manual_seed(0)
tok = VQGAN(VectorQuantizer(64, 8, kmeans_init=True), ch=64, ch_mult=[1, 2, 2], num_res_blocks=1, z_channels=64,
            attn_last_level=False, attn_mid=False)
dec = Decoder(32, train=False)
imgs = torch.stack([dec(s)["image"] for s in wds.WebDataset(sorted(glob.glob(str(w / "raw/train-*.tar"))), shardshuffle=False)])
with torch.no_grad(): tok.train()(imgs)
save_pretrained(tok.eval(), w / "vqgan")
encode_shards(str(w / "vqgan"), w / "raw", w / "tokens", image_size=32, progress=False)
t = time.time()
lightning_cli(args=["fit", "--config", "configs/generators/autoregressive/tiny.yaml",
    "--data.init_args.train", str(w / "tokens"), "--data.init_args.val", str(w / "tokens"),
    "--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "600",
    "--trainer.default_root_dir", str(w), "--trainer.logger.init_args.save_dir", str(out / "logs"),
    "--trainer.enable_progress_bar", "false",
    "--model.init_args.model.init_args.vocab_size", "64", "--model.init_args.model.init_args.dim", "256",
    "--model.init_args.model.init_args.depth", "6", "--model.init_args.model.init_args.num_heads", "8",
    "--model.init_args.lr", "1e-3", "--model.init_args.ema_decay", "0.99", "--model.init_args.warmup_steps", "50"])
print("fit seconds", time.time() - t)
print(json.dumps({"ckpt": str(next(Path(out / "logs").rglob("last.ckpt")))}))
PY
CKPT=$(find "$OUT/logs" -name last.ckpt | head -1)
timeout 60 python -m tokenforge.cli generate --generator "$CKPT" --tokens /tmp/ar_work/tokens --n 16 --classes 0 1 \
  --cfg 2.0 --top-k 16 --seed 0 --out "$OUT/samples" --no-progress 2>&1 | tail -3
rm -f "$CKPT" "$(dirname "$CKPT")"/*.ckpt  # keep the curve and samples, not the weights

# 4. DDP 1 vs 2 GPUs (only on a host with >= 2 GPUs): GPT-B training throughput on synthetic token shards
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  for N in 1 2; do
    timeout 150 python tools/gpu/autoregressive_ddp.py --devices $N 2>&1 | tail -3 | tee -a "$OUT/ddp.txt"
  done
fi
ls -R "$OUT" | head -40
