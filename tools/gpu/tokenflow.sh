#!/usr/bin/env bash
# TokenFlow on one H200 (~8 min): GPU tests + parity, `bench tokenflow` at the released sizes (CLIP-B 256 px,
# SigLIP 384 px; bf16 and fp32), and a <=6-minute training run of configs/tokenizers/tokenflow/small.yaml on
# the real photos of .device/data/images (80/20 split) whose held-out PSNR curve, metrics.csv and
# reconstruction grids land in $OUT. Run from the repo root; the lead copies ../shared data/fixtures to .device/.
source tools/gpu/env.sh   # namespace links for tokenforge.tokenizers etc.
set -x
OUT=${OUT:-/tmp/tokenflow_out}; mkdir -p "$OUT"
export TOKENFORGE_SHARED=$PWD/.device
W=$(mktemp -d /tmp/tokenflow_work.XXXX)

# 1. GPU tests and CPU-side parity of both fixtures (~1 min)
if want tests; then
timeout 150 python -m pytest tests/test_tokenflow_gpu.py -q -p no:cacheprovider 2>&1 | tail -40 | tee "$OUT/tests.txt"
for f in tokenflow tokenflow_siglip; do
  timeout 60 python tools/check_parity.py .device/fixtures/$f 2>&1 | tee "$OUT/parity_$f.txt"
done

fi
# 2. benchmark table (random weights, released sizes; BENCHMARKS.md conditions) (~2 min)
if want bench; then
timeout 150 python -m tokenforge bench tokenflow --variant clipb_256 --batch 32 --repeats 5 2>&1 | tail -4 | tee "$OUT/bench_clipb_256.md"
timeout 90 python -m tokenforge bench tokenflow --variant siglip_384 --batch 16 --repeats 3 2>&1 | tail -4 | tee "$OUT/bench_siglip_384.md"

fi
# 3. short training run: shards of the 25 photos, 6 minutes of fit, held-out PSNR every 100 steps (~7 min)
if want train; then
timeout 60 python -m tokenforge shards make images ".device/data/images/*.*" "$W/shards" --max-side 256 \
  --val-fraction 0.2 --labels none --no-progress 2>&1 | tail -2 | tee "$OUT/shards.txt"
timeout 420 python -m tokenforge fit --config configs/tokenizers/tokenflow/base.yaml \
    --config configs/tokenizers/tokenflow/small.yaml \
  --data.init_args.train "$W/shards" --data.init_args.val "$W/shards" --trainer.default_root_dir "$W" \
  --trainer.logger.init_args.save_dir "$W/logs" --trainer.enable_progress_bar false 2>&1 | tail -15 | tee "$OUT/fit.txt"
METRICS=$(find "$W/logs" -name metrics.csv | head -1)
cp "$METRICS" "$OUT/metrics.csv"
python - "$OUT/metrics.csv" <<'PY' 2>&1 | tee "$OUT/curve.txt"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
val = [(r["step"], float(r["val/psnr"])) for r in rows if r.get("val/psnr")]
train = [float(r["train/loss_g"]) for r in rows if r.get("train/loss_g")]
print("held-out PSNR by step:", ", ".join(f"{s}:{p:.2f}" for s, p in val))
if val: print(f"first {val[0][1]:.2f} dB -> best {max(p for _, p in val):.2f} dB -> last {val[-1][1]:.2f} dB")
if train: print(f"train loss_g first {train[0]:.4f} last {train[-1]:.4f} ({len(train)} logged)")
PY
CKPT=$(find "$W" -name last.ckpt | head -1)
mkdir -p "$W/val_images" && (cd "$W/val_images" && tar -xf "$W/shards"/val-000000.tar)
timeout 60 python -m tokenforge reconstruct --model "$CKPT" "$W/val_images" --out "$OUT/recon_val" --bf16 \
  2>&1 | tail -3 | tee "$OUT/recon_val.txt"
fi
ls -la "$OUT"
