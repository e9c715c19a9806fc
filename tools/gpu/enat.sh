#!/usr/bin/env bash
# ENAT on one H200 (~8 min): GPU tests + fixture parity, `bench enat` (ENAT-L, batch 64, CFG 2.5: reuse vs
# no-reuse vs MaskGIT mode, bf16 + fp32, compiled bf16), and a short ENAT run on token shards of real images
# (loss curve + decoded sample grid). Run from the repo root; the lead copies ../shared to .device/.
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl; export PYTHONPATH=/tmp/site:$PWD  (env.sh does it)
source tools/gpu/env.sh   # wheels + tokenforge namespace links
set -x
OUT=${OUT:-/tmp/enat_out}; mkdir -p "$OUT"
export TOKENFORGE_SHARED=$PWD/.device
W=/tmp/enat_work; rm -rf "$W"; mkdir -p "$W"

# 1. tests (incl. the gpu-marked CUDA parity) + fixture parity (~1 min)
timeout 120 python -m pytest tests/test_enat.py -q -x -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/tests.txt"
timeout 60 python tools/check_parity.py .device/fixtures/enat | tee "$OUT/parity_enat.txt"

# 2. benchmark: eager bf16 + fp32, then compiled bf16 (~3 min)
timeout 150 python -m tokenforge.cli bench enat --size L --batch 64 --repeats 5 --json "$OUT/bench.json" 2>&1 \
  | tail -14 | tee "$OUT/bench.md"
timeout 150 python -m tokenforge.cli bench enat --size L --batch 64 --repeats 5 --dtypes bf16 --compile \
  --json "$OUT/bench_compiled.json" 2>&1 | tail -10 | tee "$OUT/bench_compiled.md"

# 3. short ENAT run: faces -> VQGAN (k-means codebook) -> 8x8 token grids -> fit (~3 min) -> samples
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
lightning_cli(args=["fit", "--config", "configs/generators/enat/tiny.yaml",
    "--data.init_args.train", str(w / "tokens"), "--data.init_args.val", str(w / "tokens"),
    "--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "1500",
    "--trainer.default_root_dir", str(w), "--trainer.logger.init_args.save_dir", str(out / "logs"),
    "--trainer.enable_progress_bar", "false",
    "--model.init_args.model.init_args.codebook_size", "64", "--model.init_args.model.init_args.hidden_size", "256",
    "--model.init_args.model.init_args.enc_depth", "6", "--model.init_args.model.init_args.num_heads", "8",
    "--model.init_args.lr", "1e-3", "--model.init_args.ema_decay", "0.99", "--model.init_args.warmup_steps", "100"])
print("fit seconds", time.time() - t)
print(json.dumps({"ckpt": str(next(Path(out / "logs").rglob("last.ckpt")))}))
PY
CKPT=$(find "$OUT/logs" -name last.ckpt | head -1)
for MODE in "" "--no-reuse"; do
  timeout 60 python -m tokenforge.cli enat-generate --generator "$CKPT" --tokens /tmp/enat_work/tokens --n 16 \
    --classes 0 1 --cfg 2.5 --steps 8 --seed 0 $MODE --out "$OUT/samples${MODE}" --no-progress 2>&1 | tail -3
done
rm -f "$(dirname "$CKPT")"/*.ckpt  # keep the curve and samples, not the weights
ls -R "$OUT" | head -40
