#!/usr/bin/env bash
# LinFusion on one H200 (<= ~13 min in all). Phases (PHASES, default "tests bench train"; see env.sh):
#   tests  GPU + CPU tests (incl. the SDXL-like unseen variant) and check_parity on every .device/fixtures/linfusion*
#   bench  the resolution table: SD-1.5-sized random UNet, bf16, batch 1, SDPA vs LinFusion, 512..16384 px, each
#          cell its own process under `timeout` (whole phase <= BENCH_BUDGET s, default 330), then LinFusion at
#          4096 px compiled / channels_last, a 16384 px retry with chunked feed-forward if it ran out of memory,
#          and 25-step CFG loops at 512 px; tables (Markdown) + rows (JSON) in $OUT
#   train  tiny distillation on real photo shards (<= 5 min), loss curve CSV + losses summary in $OUT
# CPU smoke test: QUICK=1 ACCEL=cpu PHASES="tests train" OUT=/tmp/lf_smoke bash tools/gpu/linfusion.sh
#                 (ACCEL=cpu runs the bench with the tiny UNet at 256/512 px, fp32.)
source tools/gpu/env.sh   # wheels, tokenforge namespace, want(), ACCEL
OUT=${OUT:-/tmp/linfusion_out}; mkdir -p "$OUT"
DATA=${DATA:-.device/data}; FIX=${FIX:-.device/fixtures}
export TOKENFORGE_SHARED=$PWD/.device
W=${W:-$(mktemp -d /tmp/linfusion_work.XXXX)}; mkdir -p "$W"
QUICK=${QUICK:-0}
if [[ $ACCEL == cpu ]]; then DEV=cpu; else DEV=cuda; fi
set -x

if want tests; then
  tests=""
  for t in tests/test_linfusion.py tests/test_linfusion_sdxl.py tests/test_linfusion_generate.py tests/test_linfusion_bench.py; do
    [[ -f $t ]] && tests="$tests $t"; done
  [[ $ACCEL == gpu ]] && tests="$tests tests/test_linfusion_gpu.py"
  [[ $QUICK == 1 ]] || tests="$tests tests/test_linfusion_training.py"
  timeout 300 python -m pytest $tests -q -p no:cacheprovider 2>&1 | tail -40 | tee "$OUT/tests.txt"
  for f in "$FIX"/linfusion*/; do
    [[ -f "$f/config.json" ]] || continue
    timeout 120 python tools/check_parity.py "$f" --method linfusion 2>&1 | tee "$OUT/parity_$(basename "$f").txt"
  done
fi

if want bench; then
  B0=$SECONDS; BUDGET=${BENCH_BUDGET:-330}
  J=$OUT/bench_forward.json; rm -f "$J"
  if [[ $ACCEL == cpu ]]; then
    common=(--size tiny --device cpu --dtype float32 --warmup 0 --repeats 1); RES="256 512"; LIMIT=60; BIG=4096
  else
    common=(--size sd15 --device cuda --dtype bfloat16 --warmup 1 --repeats 3); RES="512 1024 2048 4096 8192 16384"
    LIMIT=90; BIG=16384
  fi
  [[ $QUICK == 1 && $ACCEL == cpu ]] && RES="256"
  bench() { tokenforge bench linfusion "${common[@]}" "$@"; }
  # cell ATTENTION RES [extra args]: one process, timed out at min(LIMIT (x2 from 8192 px), budget left)
  cell() {
    local a=$1 r=$2; shift 2
    local lim=$LIMIT; (( r >= 8192 )) && lim=$(( 2 * LIMIT ))
    local left=$(( BUDGET - (SECONDS - B0) )); (( left < lim )) && lim=$left
    local name=$a; for x in "$@"; do case $x in --compile) name+="+compile";; --channels-last) name+="+channels_last";;
      --ff-chunk-size) name+="+ffchunk";; esac; done
    if (( lim < 15 )); then bench --json "$J" --append --mark "$name" "$r" "not run (bench budget spent)" >/dev/null; return; fi
    timeout "$lim" python -m tokenforge bench linfusion "${common[@]}" --attention "$a" --resolutions "$r" "$@" \
      --json "$J" --append >/dev/null 2>>"$OUT/bench_log.txt"
    local rc=$?
    if [[ $rc == 124 || $rc == 137 ]]; then bench --json "$J" --append --mark "$name" "$r" "timeout after $lim s" >/dev/null
    elif [[ $rc != 0 ]]; then bench --json "$J" --append --mark "$name" "$r" "error rc=$rc (bench_log.txt)" >/dev/null; fi
  }
  for r in $RES; do cell sdpa "$r"; cell linfusion "$r"; done
  bench --json "$J" --table | tee "$OUT/bench_forward.md"
  # extras on the 4096 px row (CPU: 256): compiled, channels_last; 16384 retry with chunked FFN after an OOM
  R4=4096; [[ $ACCEL == cpu ]] && R4=256
  cell linfusion $R4 --compile
  cell linfusion $R4 --channels-last
  if grep -q '"status": "OOM"' "$J" && [[ $ACCEL == gpu ]]; then cell linfusion $BIG --ff-chunk-size 65536; fi
  [[ $QUICK == 1 ]] || cell sdpa $R4 --compile
  bench --json "$J" --table | tee "$OUT/bench_forward.md"
  # 25-step CFG DDIM loop (batch 2) at 512 px, both attentions, if budget is left
  left=$(( BUDGET - (SECONDS - B0) ))
  if (( left > 30 )) && [[ $QUICK != 1 ]]; then
    timeout "$left" python -m tokenforge bench linfusion "${common[@]}" --resolutions 512 --steps 25 --steps-max-res 512 \
      --json "$OUT/bench_generation.json" 2>>"$OUT/bench_log.txt" | tee "$OUT/bench_generation.md"
  fi
  echo "bench phase: $(( SECONDS - B0 )) s" | tee -a "$OUT/bench_forward.md"
fi

if want train; then
  steps=300; every=5; [[ $QUICK == 1 ]] && steps=8 && every=1
  timeout 60 python -m tokenforge shards make images "$DATA/images" "$W/shards" --val-fraction 0.2 --format png --no-progress
  timeout 300 python -m tokenforge fit --config configs/generators/linfusion/base.yaml \
      --config configs/generators/linfusion/tiny.yaml \
    --data.init_args.train "$W/shards" --data.init_args.val "$W/shards" --trainer.accelerator "$ACCEL" \
    --trainer.max_steps $steps --trainer.log_every_n_steps $every --trainer.default_root_dir "$W" --trainer.logger.init_args.save_dir "$OUT/logs" \
    --trainer.enable_progress_bar false 2>&1 | tail -8 | tee "$OUT/train.txt"
  find "$OUT/logs" -name metrics.csv -exec cp {} "$OUT/train_metrics.csv" \;
  timeout 30 python - "$OUT/train_metrics.csv" <<'PY' 2>&1 | tee "$OUT/train_summary.txt"
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("train/loss_noise")]
for key in ("train/loss", "train/loss_noise", "train/loss_kd", "train/loss_feat"):
    v = [float(r[key]) for r in rows if r.get(key)]
    k = max(1, len(v) // 5)
    print(f"{key}: first {sum(v[:k]) / k:.4f}  last {sum(v[-k:]) / k:.4f}  ({len(v)} logged steps)")
PY
fi
ls -la "$OUT"
