#!/usr/bin/env bash
# ONE GPU call (<= 9 min on an H100): the side-by-side speed workloads of issue 22 that docs/speed.md reports.
# On the CPU host first (builds .anchors/proj = git archive HEAD, bench/, the .whl link; checks official/):
#   bash tools/bench/setup_anchors.sh
# then on the GPU host, carrying .whl and .anchors (about 30 MB):
#   OUT=$OUT bash tools/gpu/speed_session.sh
# Runs, in this order, under one budget (BUDGET, default 480 s; a workload gets min(its limit, what is left), the
# tail is cut):
#   wavtokenizer_train   official WavTokenizer training step vs WavTokenizerModule eager / compile / compile_fused
#   llamagen_train_loop  GPT-B loop with loader + clip + AdamW: official eager / compile vs ours eager / compile / fused
#   profile              (if >= 110 s are left) tools/gpu/profile_wavtokenizer_step.py: ms per phase of one eager
#                        GAN batch, its GPU kernel time against its wall time, the top kernels -> $OUT/profile.txt
#   llamagen_train       the shared forward+backward workload, compiled rows only (the figure it is compared with)
#   wavtokenizer         the shared encode/decode workload, batch 32 bf16 only (eager and CUDA-graphed)
# SMOKE=1 runs the same sequence on CPU at tiny sizes (run_extra.sh smoke), without the profile.
# Results in $OUT: bench.jsonl (one JSON line per measurement), summary.txt (ratios), speed_rows.md (the rows of
# docs/speed.md), env.json (GPU, versions, commits), log.txt, nvidia-smi.txt.
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
OUT=${OUT:-/tmp/speed_out}; mkdir -p "$OUT"
export OUT
source tools/gpu/env.sh   # wheels -> /tmp/site (webdataset, jsonargparse, pesq ...), the registry's entry points
set -u
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
[ -e .anchors/.whl ] || ln -s ../.whl .anchors/.whl
if [ ! -d .anchors/proj/tokenizers ]; then  # not carried: measure this tree (no git here: a copy, COMMIT unknown)
  echo "speed_session: .anchors/proj missing, copying the working tree" | tee -a "$OUT/log.txt"
  bash tools/bench/setup_anchors.sh >>"$OUT/log.txt" 2>&1
fi
export PY=python3 SKIP_WHEELS=1
BUDGET=${BUDGET:-480}   # seconds for the benches and the profile; env.sh and the copies come before
export LIMIT_wavtokenizer_train=${LIMIT_wavtokenizer_train:-250}
export LIMIT_llamagen_train_loop=${LIMIT_llamagen_train_loop:-150}
export ARGS_llamagen_train=${ARGS_llamagen_train:---variants compile} LIMIT_llamagen_train=${LIMIT_llamagen_train:-90}
export ARGS_wavtokenizer=${ARGS_wavtokenizer:---batches 32 --dtypes bf16} LIMIT_wavtokenizer=${LIMIT_wavtokenizer:-50}
start=$SECONDS
left() { echo $(( BUDGET - (SECONDS - start) )); }
# 1. the two new workloads (the deliverable), 2. the step profile, 3. the shared rows they are compared with
BUDGET=$(left) bash tools/bench/run_extra.sh ${SMOKE:+smoke} ${NEW_WORKLOADS:-wavtokenizer_train llamagen_train_loop}
if (( $(left) >= 110 )) && [ -z "${NO_PROFILE:-}${SMOKE:-}" ]; then
  echo "== profile (limit 100 s)"
  timeout 100 python3 tools/gpu/profile_wavtokenizer_step.py --repeats 10 2>&1 | grep -v -i warn \
    | tee "$OUT/profile.txt" | tail -40
else
  echo "== profile: not run ($(left) s left)"
fi
(( $(left) >= 40 )) && BUDGET=$(left) bash tools/bench/run_extra.sh ${SMOKE:+smoke} \
  ${OLD_WORKLOADS:-llamagen_train wavtokenizer}
ls -la "$OUT"
