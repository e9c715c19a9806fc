# Source from the repo root on a GPU host that already has torch/lightning/transformers (no network):
# installs the carried wheels (.whl/) and makes the tokenforge namespace importable without pip -e.
#   source tools/gpu/env.sh
if [ -z "$TF_ENV_READY" ]; then  # once per host: tools/gpu/run_all.sh sources this before starting parallel scripts
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
# pesq ships only as an sdist (no cp312 wheel): build it there from .device/sdist when it is carried.
if ls .device/sdist/pesq-*.tar.gz >/dev/null 2>&1 && ! PYTHONPATH=/tmp/site python3 -c "import pesq" 2>/dev/null; then
  # setup_requires names pytest-runner, which an offline build cannot fetch: build from a copy without it
  rm -rf /tmp/pesq_src && mkdir -p /tmp/pesq_src && tar xzf .device/sdist/pesq-*.tar.gz -C /tmp/pesq_src
  sed -i "s/, 'pytest-runner'//" /tmp/pesq_src/pesq-*/setup.py
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site /tmp/pesq_src/pesq-* \
    >/tmp/pesq_build.log 2>&1 || { echo "pesq build failed; PESQ will be skipped. Last lines:"; tail -4 /tmp/pesq_build.log; }
fi
fi
export TF_ENV_READY=1
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
