#!/usr/bin/env bash
# WavTokenizer on one H200 (~8 min): GPU tests + parity, `bench tokenizer wavtokenizer` at the released 75 tok/s
# size (batch 1 and 32 x 10 s, fp32 and bf16; eager, CUDA-graphed and compiled), and a ~4-minute training run of
# configs/tokenizers/wavtokenizer/small_75.yaml (bf16-mixed, 2 s crops, batch 16) on shards of
# .device/data/speech24k (90/10 split) whose held-out mel distance / PESQ / STOI curve, metrics.csv and
# FLAC reconstructions of the held-out clips land in $OUT. Run from the repo root; the lead copies
# ../shared/data and ../shared/fixtures to .device/.
pip install --no-index --no-deps --target /tmp/site .whl/*.whl; export PYTHONPATH=/tmp/site:$PWD
[ -f tools/gpu/env.sh ] && source tools/gpu/env.sh   # namespace links for tokenforge.tokenizers etc.
set -x
OUT=${OUT:-/tmp/wavtokenizer_out}; mkdir -p "$OUT"
export TOKENFORGE_SHARED=$PWD/.device
W=/tmp/wavtokenizer_work; rm -rf "$W"; mkdir -p "$W"

# 1. GPU tests and parity of the fixture (~1 min)
timeout 150 python -m pytest tests/test_wavtokenizer_gpu.py -q -p no:cacheprovider 2>&1 | tail -8 | tee "$OUT/tests.txt"
timeout 60 python tools/check_parity.py .device/fixtures/wavtokenizer 2>&1 | tee "$OUT/parity.txt"

# 2. benchmark table: random weights at the released size, 10 s clips (BENCHMARKS.md conditions) (~2.5 min)
timeout 100 python -m tokenforge bench tokenizer wavtokenizer --variant small_75 --batches 1 32 --repeats 10 \
  2>&1 | tail -7 | tee "$OUT/bench_eager.md"
timeout 60 python -m tokenforge bench tokenizer wavtokenizer --variant small_75 --batches 1 32 --repeats 10 \
  --fuse --mode graphed 2>&1 | tail -7 | tee "$OUT/bench_graphed.md"
timeout 150 python -m tokenforge bench tokenizer wavtokenizer --variant small_75 --batches 1 32 --repeats 10 \
  --dtypes bf16 --fuse --mode compiled 2>&1 | tail -5 | tee "$OUT/bench_compiled.md"

# 3. short training run on real speech; held-out mel distance / PESQ every 100 batches (~5 min)
timeout 60 python -m tokenforge shards make audio .device/data/speech24k "$W/shards" --val-fraction 0.1 \
  --no-progress 2>&1 | tail -2 | tee "$OUT/shards.txt"
timeout 330 python -m tokenforge fit --config configs/tokenizers/wavtokenizer/small_75.yaml \
  --data.init_args.train "$W/shards" --data.init_args.val "$W/shards" --data.init_args.batch_size 16 \
  --data.init_args.val_batch_size 4 --data.init_args.segment_samples 48000 --data.init_args.num_workers 6 \
  --data.init_args.epoch_samples 3200 --data.init_args.shuffle_buffer 200 \
  --trainer.precision bf16-mixed --trainer.max_time 00:00:04:00 --trainer.max_steps 100000 \
  --trainer.val_check_interval 100 --trainer.limit_val_batches 3 --trainer.log_every_n_steps 10 \
  --trainer.default_root_dir "$W" --trainer.logger.init_args.save_dir "$W/logs" \
  --trainer.enable_progress_bar false --model.init_args.learning_rate 5.0e-4 2>&1 | tail -15 | tee "$OUT/fit.txt"
METRICS=$(find "$W/logs" -name metrics.csv | head -1)
cp "$METRICS" "$OUT/metrics.csv"
python - "$OUT/metrics.csv" <<'PY' 2>&1 | tee "$OUT/curve.txt"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
val = [r for r in rows if r.get("val/mel_distance")]
print("step  val/mel_distance  val/pesq  val/stoi  val/codebook_usage")
for r in val:
    print(r["step"], r["val/mel_distance"][:6], r.get("val/pesq", "")[:5], r.get("val/stoi", "")[:5],
          r.get("val/codebook_usage", "")[:6])
mel = [float(r["train/mel"]) for r in rows if r.get("train/mel")]
if mel: print(f"train mel first {mel[0]:.3f} last {mel[-1]:.3f} ({len(mel)} logged)")
PY
CKPT=$(find "$W" -name last.ckpt | head -1)
mkdir -p "$W/val_audio" && (cd "$W/val_audio" && for t in "$W/shards"/val-*.tar; do tar -xf "$t"; done)
timeout 90 python -m tokenforge reconstruct --model "$CKPT" "$W/val_audio" --out "$OUT/samples" \
  2>&1 | tail -3 | tee "$OUT/recon_val.txt"
ls -la "$OUT" "$OUT/samples" | head -40
