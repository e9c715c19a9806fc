#!/usr/bin/env bash
# FlexTok on one H200 (~8 min): parity + GPU tests, `bench flextok` at the d18-d18 size (bf16 and fp32,
# encode and decode at k=1/32/256, 25 steps, unguided and APG 7.5), and a <=5-minute training run of
# configs/tokenizers/flextok/small.yaml on the real photos of .device/data/images (80/20 split) whose held-out
# PSNR-vs-k curve, metrics.csv and coarse-to-fine strips land in $OUT. Run from the repo root.
source tools/gpu/env.sh   # namespace links for tokenforge.tokenizers etc.
set -x
OUT=${OUT:-/tmp/flextok_out}; mkdir -p "$OUT"
export TOKENFORGE_SHARED=$PWD/.device
W=$(mktemp -d /tmp/flextok_work.XXXX)

# 1. parity (CPU) and GPU tests (PSNR monotone in k after 400 steps) (~1 min)
if want tests; then
timeout 90 python tools/check_parity.py .device/fixtures/flextok 2>&1 | tee "$OUT/parity.txt"
timeout 120 python -m pytest tests/test_flextok.py tests/test_flextok_training.py -m gpu -q -s -p no:cacheprovider 2>&1 | tail -40 | tee "$OUT/tests.txt"

fi
# 2. benchmark table (random weights, d18-d18, BENCHMARKS.md conditions) (~2.5 min)
if want bench; then
timeout 170 python -m tokenforge bench flextok --size d18-d18 --batch 32 --dtypes bf16 --repeats 2 --warmup 0 2>&1 | tail -8 | tee "$OUT/bench_bf16.txt"
timeout 150 python -m tokenforge bench flextok --size d18-d18 --batch 32 --dtypes bf16 --ks 1 --repeats 2 --warmup 0 \
  --attention flex 2>&1 | tail -4 | tee "$OUT/bench_bf16_flex.txt"   # opt-in FlexAttention encoder (first_call_s = compile)
timeout 60 python -m tokenforge bench flextok --size d18-d18 --batch 32 --dtypes fp32 --ks 32 --steps 5 --repeats 2 --warmup 1 2>&1 | tail -4 | tee "$OUT/bench_fp32_5steps.txt"

fi
# 3. short training run: shards of the photos, <=5 minutes of fit, held-out PSNR per k every 500 steps
if want train; then
timeout 60 python -m tokenforge shards make images ".device/data/images/*.*" "$W/shards" --max-side 256 \
  --val-fraction 0.2 --labels none --no-progress 2>&1 | tail -2 | tee "$OUT/shards.txt"
timeout 300 python -m tokenforge fit --config configs/tokenizers/flextok/base.yaml \
    --config configs/tokenizers/flextok/small.yaml \
  --data.init_args.train "$W/shards" --data.init_args.val "$W/shards" --trainer.default_root_dir "$W" \
  --trainer.max_time 00:00:04:30 \
  --trainer.logger.init_args.save_dir "$W/logs" --trainer.enable_progress_bar false 2>&1 | tail -15 | tee "$OUT/fit.txt"
METRICS=$(find "$W/logs" -name metrics.csv | head -1)
cp "$METRICS" "$OUT/metrics.csv"
python - "$OUT/metrics.csv" <<'PY' 2>&1 | tee "$OUT/curve.txt"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ks = sorted({int(c.split("psnr_k")[1]) for c in rows[0] if "psnr_k" in c}) if rows else []
for r in rows:
    if r.get(f"val/psnr_k{ks[0]}") if ks else False:
        print("step", r["step"], "held-out PSNR per k:", ", ".join(f"k={k}:{float(r[f'val/psnr_k{k}']):.2f}" for k in ks))
train = [float(r["train/flow"]) for r in rows if r.get("train/flow")]
if train: print(f"train flow loss first {train[0]:.4f} last {train[-1]:.4f} ({len(train)} logged)")
PY
CKPT=$(find "$W" -name last.ckpt | head -1)
timeout 60 python -m tokenforge reconstruct --model "$CKPT" .device/data/images/astronaut.png \
  .device/data/images/coffee.png .device/data/images/chelsea.png --size 64 --tokens 1,2,4,8,16,32 \
  --out "$OUT/strips" 2>&1 | tail -3 | tee "$OUT/reconstruct.txt"
fi
ls -la "$OUT"
