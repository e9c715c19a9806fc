#!/usr/bin/env bash
# LinFusion on one H200 (~8 min): GPU tests + parity, the resolution table (SD-1.5-sized random UNet, bf16,
# batch 1, SDPA vs LinFusion, 512^2 .. 16384^2 until OOM; 25-step loops at the small sizes), and a short tiny
# distillation run on real photos (loss curve under $OUT). Run from the repo root; the lead copies
# ../shared/data and ../shared/fixtures to .device/.
# pip install --no-index --no-deps --target /tmp/site .whl/*.whl; export PYTHONPATH=/tmp/site:$PWD  (done by env.sh)
source tools/gpu/env.sh   # wheels + tokenforge namespace links
set -x
OUT=${OUT:-/tmp/linfusion_out}; mkdir -p "$OUT"
export TOKENFORGE_SHARED=$PWD/.device
W=/tmp/linfusion_work; rm -rf "$W"; mkdir -p "$W"

# 1. tests (GPU + CPU ones) and parity (~1.5 min)
timeout 240 python -m pytest tests/test_linfusion.py tests/test_linfusion_gpu.py tests/test_linfusion_generate.py -q -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/tests.txt"
timeout 60 python tools/check_parity.py .device/fixtures/linfusion | tee "$OUT/parity_linfusion.txt"

# 2. the claim: forward time / peak memory vs resolution (~4 min)
timeout 200 python -m tokenforge bench linfusion --size sd15 --dtype bfloat16 --attention sdpa linfusion \
  --resolutions 512 1024 2048 4096 8192 16384 --warmup 1 --repeats 3 --json "$OUT/bench_forward_bf16.json" \
  | tee "$OUT/bench_forward_bf16.md"
timeout 60 python -m tokenforge bench linfusion --size sd15 --dtype float32 --resolutions 512 1024 2048 \
  --warmup 1 --repeats 3 --json "$OUT/bench_forward_fp32.json" | tee "$OUT/bench_forward_fp32.md"
timeout 90 python -m tokenforge bench linfusion --size sd15 --dtype bfloat16 --resolutions 512 1024 --steps 25 \
  --warmup 1 --repeats 1 --json "$OUT/bench_generation.json" | tee "$OUT/bench_generation.md"

# 3. tiny distillation run on real photo shards (~1.5 min), CSV loss curve to $OUT
timeout 60 python -m tokenforge shards make images .device/data/images "$W/shards" --val-fraction 0.2 --format png
timeout 150 python -m tokenforge fit --config configs/generators/linfusion/tiny.yaml \
  --data.init_args.train "$W/shards" --data.init_args.val "$W/shards" --trainer.accelerator gpu \
  --trainer.max_steps 300 --trainer.default_root_dir "$W" --trainer.logger.init_args.save_dir "$OUT/logs" \
  --trainer.enable_progress_bar false 2>&1 | tail -5
find "$OUT/logs" -name metrics.csv -exec cp {} "$OUT/train_metrics.csv" \;
ls -la "$OUT"
