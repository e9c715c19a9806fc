#!/usr/bin/env bash
# VAT on one H200 (~10 min): phases (PHASES="tests bench train", default all three)
#   tests: VAT tests (gpu-marked ones included) + parity of the shape2vecset and var_msrq fixtures (~1 min)
#   bench: `bench tokenizer vat` at the paper size, encode shapes/s and decode meshes/s at 128^3 and 256^3,
#          bf16 and fp32 (~2 min)
#   train: mesh shards of .device/data/meshes with a 20% held-out split, a <=4.5-minute fit of
#          configs/tokenizers/vat/small.yaml, then the held-out meshes reconstructed for every number of scales
#          kept K=1..S: $OUT/table.md + table.json (mean F-score, Chamfer, IoU, bytes per shape per K),
#          metrics.csv (loss curve), curve.txt, preview PNGs and a few reconstructed PLYs (<= 7 min)
# CPU smoke test (a few minutes): QUICK=1 ACCEL=cpu PHASES="train" OUT=/tmp/vat_smoke bash tools/gpu/vat.sh
# Run from the repo root; the lead copies ../shared/data and ../shared/fixtures to .device/.
source tools/gpu/env.sh
set -x
OUT=${OUT:-/tmp/vat_out}; mkdir -p "$OUT"
W=${WORK:-/tmp/vat_work}; rm -rf "$W"; mkdir -p "$W"
DATA=${DATA:-.device/data}
QUICK=${QUICK:-0}
if [ "$ACCEL" = cpu ]; then DEV=cpu; PREC=32-true; else DEV=cuda; PREC=bf16-mixed; fi

# 1. tests + parity (~1 min)
if want tests; then
  timeout 240 python3 -m pytest tests/test_vat_*.py -q -p no:cacheprovider 2>&1 | tail -8 | tee "$OUT/tests.txt"
  for fixture in shape2vecset var_msrq; do
    timeout 90 python3 tools/check_parity.py ".device/fixtures/$fixture" 2>&1 | tee "$OUT/parity_$fixture.txt"
  done
fi

# 2. bench: random weights at the paper size (512 wide, 8+8 blocks, 256 latents, 8192 points), batch 16 (~2 min)
if want bench; then
  if [ "$QUICK" = 1 ]; then BENCH="--size tiny --batch 2 --resolutions 32 64 --repeats 1 --warmup 0"
  else BENCH="--size paper --batch 16 --resolutions 128 256 --repeats 3 --warmup 1"; fi
  timeout 200 python3 -m tokenforge bench tokenizer vat $BENCH --device $DEV --dtypes bf16 \
    --json "$OUT/bench_bf16.json" 2>&1 | tail -4 | tee "$OUT/bench_bf16.txt"
  timeout 200 python3 -m tokenforge bench tokenizer vat $BENCH --device $DEV --dtypes fp32 \
    --json "$OUT/bench_fp32.json" 2>&1 | tail -4 | tee "$OUT/bench_fp32.txt"
fi

# 3. train on the real meshes, then the coarse-to-fine table on the held-out ones (<= 7 min)
if want train; then
  if [ "$QUICK" = 1 ]; then
    SHARDS="--num-surface 1024 --num-vol 512 --num-near 512 --workers 0"
    FIT=(--trainer.max_steps 80 --trainer.max_time 00:00:02:00 --trainer.log_every_n_steps 4
         --trainer.val_check_interval 40 --model.init_args.quantize_start 40
         --model.init_args.model.init_args.dim 64 --model.init_args.model.init_args.encoder_depth 1
         --model.init_args.model.init_args.decoder_depth 1 --model.init_args.optimizer.init_args.lr 0.002 --data.init_args.batch_size 4
         --data.init_args.num_workers 0 --data.init_args.num_points 512 --data.init_args.num_queries 512)
    REC="--points 512 --resolution 32 --eval-points 5000"; HELD=3
  else
    SHARDS="--workers 16"
    FIT=(--trainer.max_time 00:00:04:30)
    REC="--points 4096 --resolution 128 --eval-points 30000"; HELD=100
  fi
  timeout 200 python3 -m tokenforge shards make meshes "$DATA/meshes/*.ply" "$W/shards" --val-fraction 0.2 \
    $SHARDS --no-progress 2>&1 | tail -3 | tee "$OUT/shards.txt"
  timeout 330 python3 -m tokenforge fit --config configs/tokenizers/vat/base.yaml \
      --config configs/tokenizers/vat/small.yaml \
    --data.init_args.train "$W/shards" --data.init_args.val "$W/shards" --trainer.default_root_dir "$W" \
    --trainer.accelerator "$ACCEL" --trainer.precision "$PREC" "${FIT[@]}" \
    --trainer.logger.init_args.save_dir "$W/logs" --trainer.enable_progress_bar false 2>&1 | tail -15 | tee "$OUT/fit.txt"
  METRICS=$(find "$W/logs" -name metrics.csv | head -1)
  [ -n "$METRICS" ] && cp "$METRICS" "$OUT/metrics.csv"
  timeout 30 python3 - "$OUT/metrics.csv" <<'PY' 2>&1 | tee "$OUT/curve.txt"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for key in ("train/bce_vol", "train/bce_near", "train/vq", "train/iou"):
    vals = [(r["step"], float(r[key])) for r in rows if r.get(key)]
    if vals:
        print(f"{key}: first {vals[0][1]:.4f} (step {vals[0][0]})  last {vals[-1][1]:.4f} (step {vals[-1][0]})"
              f"  min {min(v for _, v in vals):.4f}  ({len(vals)} logged)")
for r in rows:
    if r.get("val/bce_vol"):
        print(f"step {r['step']}: held-out val bce_vol {float(r['val/bce_vol']):.4f}  iou {float(r['val/iou']):.4f}")
PY
  CKPT=$(find "$W" -name last.ckpt | head -1)
  timeout 30 python3 -c "
import sys; from pathlib import Path; from tokenforge.demo_stages import held_out
print('\n'.join(map(str, held_out(Path(sys.argv[1]), Path(sys.argv[2]), {'ply'}, int(sys.argv[3])))))
" "$W/shards" "$W/held_out" $HELD 2>&1 | tee "$OUT/held_out.txt"
  timeout 150 python3 -m tokenforge reconstruct --model "$CKPT" "$W"/held_out/*.ply --out "$W/rec" \
    --scales all $REC --device $DEV 2>&1 | tail -20 | tee "$OUT/reconstruct.txt"
  cp "$W/rec/summary.md" "$OUT/table.md"; cp "$W/rec/summary.json" "$OUT/table.json"
  cp "$W/rec/metrics.json" "$OUT/reconstruct_metrics.json"
  mkdir -p "$OUT/previews"; cp "$W"/rec/*.png "$OUT/previews/" 2>/dev/null
  FIRST=$(ls "$W"/rec/*.k1.ply 2>/dev/null | head -1)  # one shape's coarsest and finest PLY (files are ~MBs)
  [ -n "$FIRST" ] && cp "$FIRST" "$(ls "${FIRST%.k1.ply}".k*.ply | sort -V | tail -1)" "$OUT/previews/"
  { echo "# VAT small: held-out coarse-to-fine table"; echo; echo "command: bash tools/gpu/vat.sh (PHASES=train)";
    echo "config: configs/tokenizers/vat/small.yaml ${FIT[*]}"; echo; cat "$OUT/table.md"; } > "$OUT/README.md"
fi
ls -la "$OUT"
