#!/usr/bin/env bash
# Autoregressive generators on one H200 (~8 min): GPU tests, `bench generator ar`, a short GPT run on token
# shards from a real tokenizer (NLL curve + decoded samples), and 1-vs-2-GPU DDP throughput when 2 GPUs exist.
# Run from the repo root; the lead copies ../shared/data and ../shared/fixtures to .device/.
source tools/gpu/env.sh   # wheels + tokenforge namespace links
set -x
OUT=${OUT:-/tmp/ar_out}; mkdir -p "$OUT"
export TOKENFORGE_SHARED=$PWD/.device
W=$(mktemp -d /tmp/ar_work.XXXX)

# 1. GPU tests + parity (1 min)
if want tests; then
timeout 120 python -m pytest tests/test_autoregressive_gpt.py -q -p no:cacheprovider 2>&1 | tail -40 | tee "$OUT/tests.txt"
timeout 60 python tools/check_parity.py .device/fixtures/llamagen | tee "$OUT/parity_llamagen.txt"

fi
# 2. benchmark table (GPT-B, bf16 + fp32, batch 1/64, cache/compile; training fwd+bwd) (~3 min)
if want bench; then
timeout 240 python -m tokenforge.cli bench generator ar --size B --repeats 3 --dtype bf16 --json "$OUT/bench.json" \
  2>&1 | grep -v -i warn | tail -20 | tee "$OUT/bench.md"

fi
# 2b. where the compiled sampler spends its time (images/s with/without top-k, top kernels) (~1.5 min)
if want profile; then
timeout 200 python tools/gpu/profile_ar_sampling.py 2>&1 | grep -v -i warn | tee "$OUT/profile.txt"
fi
# 3. short GPT run on tokens of a real tokenizer: LFW faces -> VQGAN (k-means codebook) -> 8x8 token grids (~3 min)
if want train; then
fit_on_face_tokens configs/generators/autoregressive/tiny.yaml 1200 \
  --model.init_args.model.init_args.dim 192 --model.init_args.model.init_args.depth 4 \
  --model.init_args.model.init_args.num_heads 4 \
  --model.init_args.optimizer.init_args.lr 1e-3 --model.init_args.ema_decay 0.99 \
  --model.init_args.lr_scheduler.init_args.warmup_steps 100
timeout 90 python -m tokenforge generate --generator "$CKPT" --tokenizer "$TOKENS/vqgan" --n 16 --classes 0 1 \
  --cfg 2.0 --top-k 64 --seed 0 --out "$OUT/samples" --no-progress 2>&1 | tail -3
rm -f "$(dirname "$CKPT")"/*.ckpt  # keep the curve and samples, not the weights

fi
# 4. DDP 1 vs 2 GPUs (only on a host with >= 2 GPUs): GPT-B training throughput on synthetic token shards
if want ddp; then
# needs both GPUs visible: with tools/gpu/run_all.sh give it its own lane "0,1|autoregressive:ddp"
if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  for N in 1 2; do
    timeout 150 python tools/gpu/autoregressive_ddp.py --devices $N 2>&1 | tail -3 | tee -a "$OUT/ddp.txt"
  done
fi
fi
ls -R "$OUT" | head -40
