#!/usr/bin/env bash
# Loader throughput on a GPU host (issue 3): samples/s per worker for each modality, real data in .device/data.
set -x
source tools/gpu/env.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nproc
tokenforge bench data --data .device/data --workers 0,2,4,8,16 --batches 100 --batch-size 16 2>&1 | tee "$OUT/bench_data.txt"
