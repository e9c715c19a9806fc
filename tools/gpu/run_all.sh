#!/usr/bin/env bash
# Run several GPU scripts in one device call: lanes run in parallel, each lane's jobs in order.
#   bash tools/gpu/run_all.sh "0|linfusion:bench,enat:bench" "1|face_tokens,autoregressive:train/enat:train"
# A lane is "GPU|JOBS" (GPU may list several, e.g. "0,1" for a DDP job); JOBS separated by "," run one after
# another on those GPUs; "a/b" runs a and b together (the next "," step starts when all of them are done).
# A job is METHOD:PHASE+PHASE (tools/gpu/METHOD.sh with PHASES set) or `face_tokens` (shared token shards);
# "%KEY=VALUE" suffixes set environment variables for that job only, e.g. "wavtokenizer:train%GAN_RAMP=0".
# Each job writes $R/<method>_<phases>/ and a .log beside it; at the end everything small is tarred into
# $OUT/results.tgz (the device returns at most 8 files). RUN_SECONDS bounds the whole run (default 540).
source tools/gpu/env.sh
R=/tmp/results; rm -rf "$R"; mkdir -p "$R"
FINAL_OUT=${OUT:-/tmp/out}; mkdir -p "$FINAL_OUT"
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv > "$R/gpus.csv" 2>&1

DEADLINE=$(( $(date +%s) + ${RUN_SECONDS:-540} ))

run_job() {  # run_job GPU JOB
  local gpu=$1 job=${2%%\%*} method phases name start left rc settings=()
  [ "$job" != "$2" ] && IFS='%' read -ra settings <<< "${2#*%}"
  method=${job%%:*}; phases=${job#*:}; [ "$phases" = "$job" ] && phases=all
  name="${method}_${phases//+/_}"; for kv in "${settings[@]}"; do name+="_${kv//=/}"; done
  start=$(date +%s); left=$(( DEADLINE - start ))
  if [ "$left" -le 5 ]; then echo "$name gpu=$gpu skipped (no time left)" >> "$R/summary.txt"; return; fi
  if [ "$method" = face_tokens ]; then
    CUDA_VISIBLE_DEVICES=$gpu timeout "$left" python3 tools/gpu/face_tokens.py --work /tmp/face_tokens \
      --seconds "${VQ_SECONDS:-120}" --accel gpu > "$R/$name.log" 2>&1
  else
    mkdir -p "$R/$name"
    env "${settings[@]}" CUDA_VISIBLE_DEVICES=$gpu PHASES="${phases//+/ }" OUT="$R/$name" timeout "$left" bash "tools/gpu/$method.sh" \
      > "$R/$name.log" 2>&1
  fi
  rc=$?
  echo "$name gpu=$gpu rc=$rc seconds=$(( $(date +%s) - start ))" >> "$R/summary.txt"
}

run_lane() {  # run_lane "GPU|a,b/c"
  local gpu=${1%%|*} jobs=${1#*|} step part
  IFS=',' read -ra steps <<< "$jobs"
  for step in "${steps[@]}"; do
    IFS='/' read -ra parts <<< "$step"
    for part in "${parts[@]}"; do run_job "$gpu" "$part" & done
    wait
  done
}

for lane in "$@"; do run_lane "$lane" & done
wait
cat "$R/summary.txt" 2>/dev/null
cp /tmp/face_tokens/vqgan_curve.txt "$R/" 2>/dev/null
# jobs cut by the deadline leave python children behind: end them, but never a process this script runs under
# (a device command line that itself names python and tools/ matched the former `pkill -f` and was killed)
ancestors=" $$ "; pid=$$
while pid=$(ps -o ppid= -p "$pid" | tr -d ' ') && [ "${pid:-0}" -gt 1 ]; do ancestors+="$pid "; done
for pid in $(pgrep -f "python3? (-m tokenforge|tools/)"); do [[ $ancestors == *" $pid "* ]] || kill -TERM "$pid"; done
sleep 3
find "$R" \( -name '*.ckpt' -o -name '*.safetensors' -o -name '*.pt' -o -size +3M \) -delete
tar czf "$FINAL_OUT/results.tgz" -C "$R" .
ls -la "$FINAL_OUT"
