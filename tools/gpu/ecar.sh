#!/usr/bin/env bash
# E-CAR on one H200 (~8 min): GPU tests + MAR parity, `bench ecar` (E-CAR vs matched DiT: GFLOPs and latency per
# 256 px image, bf16 + fp32, batch 1/64), and short E-CAR and DiT runs on the same real latents (KL autoencoder
# trained here on LFW crops) with curves, sample grids and generation time per image.
# Run from the repo root; the lead copies ../shared/data and ../shared/fixtures to .device/.
source tools/gpu/env.sh   # namespace links for tokenforge.tokenizers etc.
set -x
OUT=${OUT:-/tmp/ecar_out}; mkdir -p "$OUT"
export TOKENFORGE_SHARED=$PWD/.device

# 1. GPU tests + parity (<1 min)
if want tests; then
timeout 120 python -m pytest tests/test_ecar_gpu.py tests/test_ecar_mar_parity.py tests/test_ecar_model.py -q \
  -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/tests.txt"
timeout 60 python tools/check_parity.py .device/fixtures/mar | tee "$OUT/parity_mar.txt"

fi
# 2. the claim: GFLOPs + latency per 256 px image, E-CAR-B vs DiT-B (patch 1 on 16x16 KL-16 latents) (~2 min)
if want bench; then
timeout 180 python -m tokenforge.cli bench ecar --size B --batch 1 64 --repeats 3 --json "$OUT/bench.json" 2>&1 \
  | tail -16 | tee "$OUT/bench.md"
timeout 60 python -m tokenforge.cli bench ecar --size B --batch 64 --dtype bf16 --dit-patch 2 --repeats 3 \
  --json "$OUT/bench_dit_p2.json" 2>&1 | tail -6 | tee "$OUT/bench_dit_p2.md"

fi
# 3. same latents, two generators: KL autoencoder (~1 min) -> E-CAR (~2 min) and FlowDiT (~2 min), grids (~5 min)
if want train; then
timeout 480 python tools/ecar_run.py --data .device/data --work /tmp/ecar_work --out "$OUT" --device $([ "$ACCEL" = gpu ] && echo cuda || echo cpu) \
  --kl-steps 600 --gen-steps 1500 --dim 256 --depth 6 2>&1 | grep -v Warning | tail -40 | tee "$OUT/train_run.txt"
fi
ls -R "$OUT" | head -40
