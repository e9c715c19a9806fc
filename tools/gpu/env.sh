# Source from the repo root on a GPU host that already has torch/lightning/transformers (no network):
# installs the carried wheels (.whl/) and makes the tokenforge namespace importable without pip -e.
#   source tools/gpu/env.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
ns=/tmp/tokenforge-ns/tokenforge
mkdir -p "$ns"
for portion in tokenizers generators data; do ln -sfn "$PWD/$portion" "$ns/$portion"; done
export PYTHONPATH="/tmp/site:$PWD:/tmp/tokenforge-ns${PYTHONPATH:+:$PYTHONPATH}"
export TOKENFORGE_SHARED="$PWD/.device" PYTHONUNBUFFERED=1
tokenforge() { python3 -m tokenforge "$@"; }
export -f tokenforge
python3 -c "import tokenforge.tokenizers.base, tokenforge.data.shards, torch; print('tokenforge importable; torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# Phases: scripts wrap their sections in `if want tests|bench|train; then ...; fi`; PHASES picks which run.
want() { [[ " ${PHASES:-tests bench train} " == *" $1 "* ]]; }
export -f want
export ACCEL=${ACCEL:-gpu}
