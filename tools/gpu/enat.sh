#!/usr/bin/env bash
# ENAT on one H200 (~8 min): GPU tests + fixture parity, `bench enat` (ENAT-L, batch 64, CFG 2.5: reuse vs
# no-reuse vs MaskGIT mode, bf16 + fp32, compiled bf16), and a short ENAT run on token shards of real images
# (loss curve + decoded sample grid). Run from the repo root; the lead copies ../shared to .device/.
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl; export PYTHONPATH=/tmp/site:$PWD  (env.sh does it)
source tools/gpu/env.sh   # wheels + tokenforge namespace links
set -x
OUT=${OUT:-/tmp/enat_out}; mkdir -p "$OUT"
export TOKENFORGE_SHARED=$PWD/.device
W=$(mktemp -d /tmp/enat_work.XXXX)

# 1. tests (incl. the gpu-marked CUDA parity) + fixture parity (~1 min)
if want tests; then
timeout 120 python -m pytest tests/test_enat.py -q -p no:cacheprovider 2>&1 | tail -40 | tee "$OUT/tests.txt"
timeout 60 python tools/check_parity.py .device/fixtures/enat | tee "$OUT/parity_enat.txt"

fi
# 2. benchmark: eager bf16 + fp32, then compiled bf16 (~3 min)
if want bench; then
timeout 150 python -m tokenforge.cli bench enat --size L --batch 64 --repeats 5 --json "$OUT/bench.json" 2>&1 \
  | tail -14 | tee "$OUT/bench.md"
timeout 150 python -m tokenforge.cli bench enat --size L --batch 64 --repeats 5 --dtypes bf16 --compile \
  --json "$OUT/bench_compiled.json" 2>&1 | tail -10 | tee "$OUT/bench_compiled.md"

fi
# 3. short ENAT run: faces -> VQGAN (k-means codebook) -> 8x8 token grids -> fit (~3 min) -> samples
if want train; then
fit_on_face_tokens configs/generators/enat/tiny.yaml 3000 \
  --model.init_args.model.init_args.hidden_size 256 --model.init_args.model.init_args.enc_depth 6 \
  --model.init_args.model.init_args.num_heads 8 \
  --model.init_args.optimizer.init_args.lr 1e-3 --model.init_args.ema_decay 0.99 \
  --model.init_args.lr_scheduler.init_args.warmup_steps 100
for MODE in "" "--no-reuse"; do
  timeout 60 python -m tokenforge generate --generator "$CKPT" --tokenizer "$TOKENS/vqgan" --n 16 \
    --classes 0 1 --cfg 2.5 --steps 8 --seed 0 $MODE --out "$OUT/samples${MODE}" --no-progress 2>&1 | tail -3
done
rm -f "$(dirname "$CKPT")"/*.ckpt  # keep the curve and samples, not the weights
fi
ls -R "$OUT" | head -40
