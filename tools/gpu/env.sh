# Source from the repo root on a GPU host that already has torch/lightning/transformers (no network):
# installs the carried wheels (.whl/) and makes the tokenforge namespace importable without pip -e.
#   source tools/gpu/env.sh
if [ -z "$TF_ENV_READY" ]; then  # once per host: tools/gpu/run_all.sh sources this before starting parallel scripts
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
# pesq ships only as an sdist that needs Cython to build: carry a cp312 wheel built on the CPU host instead:
#   ~/.pyenv/versions/3.12.1/bin/python -m pip wheel pesq==0.0.4 --no-deps -w .whl
PYTHONPATH=/tmp/site python3 -c "import pesq" 2>/dev/null || echo "pesq not importable: PESQ will be skipped"
# soundfile needs cffi (and pycparser), which the image lacks: `../shared/tools/offline-wheels cffi pycparser`
PYTHONPATH=/tmp/site python3 -c "import soundfile" 2>/dev/null \
  || echo "soundfile not importable: carry the cffi and pycparser wheels in .whl/ (audio I/O will fail)"
fi
export TF_ENV_READY=1
# the method registry reads the `tokenforge.methods` entry points from installed metadata: without `pip install`,
# give /tmp/site a minimal dist-info carrying pyproject.toml's entry points
python3 - <<'PY'
import pathlib, tomllib
project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
info = pathlib.Path("/tmp/site/tokenforge-0.0.0+gpu.dist-info")
info.mkdir(parents=True, exist_ok=True)
(info / "METADATA").write_text("Metadata-Version: 2.1\nName: tokenforge\nVersion: 0.0.0+gpu\n")
lines = [f"[{group}]" + "".join(f"\n{k} = {v}" for k, v in points.items())
         for group, points in project.get("entry-points", {}).items()]
(info / "entry_points.txt").write_text("\n\n".join(lines) + "\n")
PY
ns=/tmp/tokenforge-ns/tokenforge
mkdir -p "$ns"
for portion in tokenizers generators data; do ln -sfn "$PWD/$portion" "$ns/$portion"; done
export PYTHONPATH="/tmp/site:$PWD:/tmp/tokenforge-ns${PYTHONPATH:+:$PYTHONPATH}"
export TOKENFORGE_SHARED="$PWD/.device" PYTHONUNBUFFERED=1
tokenforge() { python3 -m tokenforge "$@"; }
export -f tokenforge
[ -n "$TF_ENV_CHECKED" ] || python3 -c "import tokenforge.tokenizers.base, tokenforge.data.shards, torch; print('tokenforge importable; torch', torch.__version__, 'cuda', torch.cuda.is_available())"
export TF_ENV_CHECKED=1
# Phases: scripts wrap their sections in `if want tests|bench|train; then ...; fi`; PHASES picks which run.
want() { [[ " ${PHASES:-tests bench train} " == *" $1 "* ]]; }
export -f want
export ACCEL=${ACCEL:-gpu}
# fit_on_face_tokens CONFIG MAX_STEPS [overrides...]: the generators' short GPU run on shared face-token shards
# (tools/gpu/face_tokens.py makes them once per host); the curve goes to $OUT/curve.txt, the checkpoint to $CKPT.
fit_on_face_tokens() {
  local config=$1 steps=$2; shift 2
  TOKENS=${TOKENS:-/tmp/face_tokens}
  [ -d "$TOKENS/tokens" ] || timeout 240 python tools/gpu/face_tokens.py --work "$TOKENS" \
    --seconds "${VQ_SECONDS:-120}" --accel "$ACCEL" 2>&1 | tail -3
  cp "$TOKENS/vqgan_curve.txt" "$OUT/" 2>/dev/null
  timeout "${FIT_TIMEOUT:-300}" python -m tokenforge fit --config "$(dirname "$config")/base.yaml" \
      --config "$config" --trainer.precision bf16-mixed "$@" \
    --data.init_args.train "$TOKENS/tokens" --data.init_args.val "$TOKENS/tokens" --data.init_args.num_workers 2 \
    --trainer.accelerator "$ACCEL" --trainer.max_steps "${MAX_STEPS:-$steps}" \
    --trainer.max_time "00:00:${FIT_MINUTES:-04}:00" --trainer.check_val_every_n_epoch 5 \
    --trainer.default_root_dir "$W" --trainer.logger.init_args.save_dir "$OUT/logs" \
    --trainer.enable_progress_bar false 2>&1 | grep -v Warning | tail -5 | tee "$OUT/fit.txt"
  python tools/gpu/curve.py "$OUT/logs" 2>&1 | tee "$OUT/curve.txt"
  CKPT=$(find "$OUT/logs" -name last.ckpt | head -1)
}
export -f fit_on_face_tokens

