#!/usr/bin/env bash
# The side-by-side workloads of tools/bench/ (wavtokenizer_train, llamagen_train_loop) next to the shared ones
# (../shared/bench: llamagen_sample, llamagen_train, wavtokenizer, enat, linfusion, tokenflow, flextok), run the way
# .anchors/bench/run.sh runs them (one process per workload under `timeout`, JSON lines in $OUT/bench.jsonl, log in
# $OUT/log.txt, versions and commits in $OUT/env.json, the ratio table in $OUT/summary.txt and docs/speed.md's
# rows in $OUT/speed_rows.md). run.sh knows only its seven workloads, so this is its loop for any of them.
#   bash tools/bench/run_extra.sh                                   # the two new workloads (GPU)
#   bash tools/bench/run_extra.sh wavtokenizer_train llamagen_train wavtokenizer   # any, in this order
#   ARGS_wavtokenizer="--batches 32 --dtypes bf16" LIMIT_wavtokenizer=60 bash tools/bench/run_extra.sh wavtokenizer
#   PY=.venv/bin/python OUT=/tmp/smoke bash tools/bench/run_extra.sh smoke    # CPU: --device cpu --tiny
# Needs .anchors/ (tools/bench/setup_anchors.sh): official sources, proj (what is measured), .whl, bench/.
# BUDGET (s, default 540) bounds the whole call: a workload gets min(its limit, what is left); SKIP_WHEELS=1 when
# the wheels are already in /tmp/site (tools/gpu/env.sh installed them).
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
A=$ROOT/.anchors
B=$A/bench
OUT=${OUT:-/tmp/anchors_out}
mkdir -p "$OUT" "$B"
J=$OUT/bench.jsonl
LOG=$OUT/log.txt
PY=${PY:-python3}
BUDGET=${BUDGET:-540}
declare -A LIMIT=([wavtokenizer_train]=240 [llamagen_train_loop]=200 [llamagen_sample]=300 [wavtokenizer]=100
                  [linfusion]=120 [enat]=100 [llamagen_train]=300 [tokenflow]=150 [flextok]=470)
EXTRA=()
if [[ ${1:-} == smoke ]]; then
  shift; EXTRA=(--device cpu --tiny); SKIP_WHEELS=1; BUDGET=${SMOKE_BUDGET:-1200}
fi
W=("$@"); (( ${#W[@]} )) || W=(wavtokenizer_train llamagen_train_loop)

cp -f "$ROOT"/tools/bench/*.py "$B/"   # ours next to the shared scripts (they import common.py from there)
# the shared scripts that read size tables get them from tools/bench/compat.py (configs are the sizes now)
sed -i -e 's/^\( *\)from tokenforge\.generators\.autoregressive\.bench import SIZES$/\1from compat import AR_SIZES as SIZES/' \
       -e 's/^\( *\)from tokenforge\.generators\.enat\.bench import SIZES$/\1from compat import ENAT_SIZES as SIZES/' \
       "$B"/llamagen_sample.py "$B"/llamagen_train.py "$B"/enat.py 2>/dev/null
[[ -f $B/common.py ]] || { echo "run_extra.sh: no $B/common.py: run tools/bench/setup_anchors.sh first"; exit 2; }
[[ -d $A/proj/tokenizers ]] || { echo "run_extra.sh: no $A/proj: run tools/bench/setup_anchors.sh first"; exit 2; }
for w in "${W[@]}"; do
  [[ -f $B/$w.py ]] || { echo "run_extra.sh: unknown workload '$w' (${!LIMIT[*]})"; exit 2; }
done
if [[ -z ${SKIP_WHEELS:-} ]]; then  # wheels -> /tmp/site, as run.sh (same stamp, so neither reinstalls)
  stamp=$(ls "$A/.whl/" | md5sum | cut -c1-32)
  if [[ $(cat /tmp/site/.anchors-wheels 2>/dev/null) != "$stamp" ]]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$A"/.whl/*.whl >>"$LOG" 2>&1 || { echo "run_extra.sh: wheel install failed (see $LOG)"; exit 1; }
    echo "$stamp" > /tmp/site/.anchors-wheels
  fi
fi
NS=${ANCHORS_NS:-/tmp/anchors-ns}   # tokenforge importable from .anchors/proj without pip -e (as run.sh)
mkdir -p "$NS/tokenforge"
for portion in tokenizers generators data; do ln -sfn "$A/proj/$portion" "$NS/tokenforge/$portion"; done
export PYTHONPATH="/tmp/site:$A/proj:$NS${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
  ANCHORS_DIR=$A ANCHORS_NS=$NS
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/anchors-inductor}

$PY - "$A" >"$OUT/env.json" 2>>"$LOG" <<'PY'
import json, platform, sys
from pathlib import Path
import torch
a = Path(sys.argv[1])
cuda = torch.cuda.is_available()
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else "none",
        "gpu_mem_GiB": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None}
for name in ("lightning", "transformers", "torchaudio", "einops", "numpy"):
    try:
        info[name] = __import__(name).__version__
    except Exception as error:  # noqa: BLE001
        info[name] = f"missing ({type(error).__name__})"
for path in sorted((a / "official").glob("*/COMMIT")) + [a / "proj" / "COMMIT"]:
    info[f"commit_{path.parent.name}"] = path.read_text().strip() if path.is_file() else None
print(json.dumps(info))
PY
echo "env: $(cat "$OUT/env.json")"

status() { printf '{"workload": "%s", "status": "%s"%s}\n' "$1" "$2" "${3:-}" >>"$J"; }
for w in "${W[@]}"; do
  left=$(( BUDGET - SECONDS - 5 ))
  lim=${LIMIT[$w]}; v=LIMIT_$w; [[ -n ${!v:-} ]] && lim=${!v}
  [[ ${#EXTRA[@]} -gt 0 ]] && lim=${SMOKE_LIMIT:-600}
  (( left < lim )) && lim=$left
  if (( left < 30 )); then
    echo "== $w: not run ($left s of the budget left)"; status "$w" "not run (budget spent)" ", \"budget_s\": $BUDGET"
    continue
  fi
  a=ARGS_$w; read -r -a args <<< "${!a:-}"
  echo "== $w ${args[*]} (limit $lim s, $SECONDS s elapsed)" | tee -a "$LOG"
  t0=$SECONDS
  timeout -k 10 "$lim" $PY "$B/$w.py" --jsonl "$J" ${EXTRA[@]+"${EXTRA[@]}"} ${args[@]+"${args[@]}"} >>"$LOG" 2>&1
  rc=$?
  dt=$(( SECONDS - t0 ))
  if (( rc == 124 || rc == 137 )); then
    status "$w" "timeout" ", \"timeout_s\": $lim"; echo "   timeout after $dt s"
  elif (( rc != 0 )); then
    status "$w" "error" ", \"rc\": $rc, \"wall_s\": $dt"; echo "   exit $rc after $dt s"; tail -5 "$LOG"
  else
    status "$w" "done" ", \"wall_s\": $dt"; echo "   done in $dt s"
  fi
done
echo "== total $SECONDS s; rows in $J, log in $LOG"
$PY "$B/common.py" summary "$J" | tee "$OUT/summary.txt"
$PY "$B/speed_table.py" "$J" --env "$OUT/env.json" | tee "$OUT/speed_rows.md"
