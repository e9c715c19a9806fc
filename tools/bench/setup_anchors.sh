#!/usr/bin/env bash
# Build (or check) the git-ignored .anchors/ folder the side-by-side benches need (../shared/bench/README.md,
# docs/speed.md). Run from the repo root on the CPU host, before a GPU call that carries .anchors:
#   bash tools/bench/setup_anchors.sh            # check official/, refresh bench/ and proj/, copy .whl/ wheels
#   bash tools/bench/setup_anchors.sh --check    # only report what is there and what is missing (exit 1 if any)
# Layout (about 9 MB + the proj copy):
#   .anchors/official/<Repo>/     upstream sources at the parity fixtures' commits, each with a COMMIT file:
#       LlamaGen ce98ec41 (FoundationVision/LlamaGen), WavTokenizer 5cf440d9 (jishengpeng/WavTokenizer),
#       ENAT 550f22c0 (LeapLabTHU/ENAT), LinFusion 62ef2898 (Huage001/LinFusion), TokenFlow 9812da01
#       (ByteVisionLab/TokenFlow, tokenflow/tokenizer only), ml-flextok 87d00cc8 (apple/ml-flextok). From a clone:
#       git -C CLONE archive COMMIT | tar -x -C .anchors/official/Repo && git -C CLONE rev-parse COMMIT > .../COMMIT
#       This script never downloads them; it checks each COMMIT file against the list.
#   .anchors/bench/               ../shared/bench (run.sh, common.py, the seven workloads) + tools/bench/*.py
#   .anchors/proj/                `git archive HEAD` of this repo (what is measured), COMMIT = HEAD; without git
#                                 (a device copy of the tree) the tracked folders are copied instead
#   .anchors/.whl -> ../.whl      the wheels of .whl/ (Python 3.12; pesq, soundfile, cffi, webdataset, jsonargparse,
#                                 ...). FlexTok's workload also needs lazy-importer and mup 1.0.0 (PyPI has only
#                                 an sdist: `python3.12 -m pip wheel --no-deps mup==1.0.0 -w .whl`;
#                                 `../shared/tools/offline-wheels lazy-importer`); the two new workloads need none.
set -u
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)" || exit 1
A=.anchors
SHARED=${SHARED:-../shared}
check_only=${1:-}
declare -A COMMITS=([LlamaGen]=ce98ec41 [WavTokenizer]=5cf440d9 [ENAT]=550f22c0 [LinFusion]=62ef2898
                    [TokenFlow]=9812da01 [ml-flextok]=87d00cc8)
missing=0
for repo in "${!COMMITS[@]}"; do
  have=$(cat "$A/official/$repo/COMMIT" 2>/dev/null)
  if [[ $have == ${COMMITS[$repo]}* ]]; then
    echo "official/$repo: ${have:0:12} ok"
  else
    echo "official/$repo: MISSING or other commit ('${have:0:12}', want ${COMMITS[$repo]}): export it (header)"
    missing=1
  fi
done
grep -qx '/.anchors/' .git/info/exclude 2>/dev/null || { [[ -d .git ]] && echo '/.anchors/' >> .git/info/exclude; }
if [[ $check_only == --check ]]; then
  for d in bench proj .whl; do [[ -d $A/$d ]] && echo "$d: $(du -sh "$A/$d" | cut -f1)" || { echo "$d: missing"; missing=1; }; done
  exit $missing
fi

# bench/: the shared scripts (read-only there) plus ours, writable
mkdir -p "$A/bench"
if [[ -d $SHARED/bench ]]; then
  cp -f "$SHARED"/bench/*.py "$SHARED"/bench/run.sh "$SHARED"/bench/README.md "$A/bench/" && chmod u+w "$A"/bench/*
fi
cp -f tools/bench/*.py "$A/bench/"
B=$A/bench
# the shared scripts that read size tables get them from tools/bench/compat.py (configs are the sizes now)
sed -i -e 's/^\( *\)from tokenforge\.generators\.autoregressive\.bench import SIZES$/\1from compat import AR_SIZES as SIZES/' \
       -e 's/^\( *\)from tokenforge\.generators\.enat\.bench import SIZES$/\1from compat import ENAT_SIZES as SIZES/' \
       "$B"/llamagen_sample.py "$B"/llamagen_train.py "$B"/enat.py 2>/dev/null
[[ -f $A/bench/run.sh ]] || { echo "no $A/bench/run.sh: give SHARED=<the shared folder> (it holds bench/)"; missing=1; }

# proj/: what is measured
rm -rf "$A/proj" && mkdir -p "$A/proj"
if git rev-parse HEAD >/dev/null 2>&1; then
  git archive HEAD | tar -x -C "$A/proj"
  git rev-parse HEAD > "$A/proj/COMMIT"
  [[ -n $(git status --porcelain --untracked-files=no) ]] && echo "note: proj is HEAD; uncommitted edits are not in it"
else
  for d in tokenforge tokenizers generators data configs tools pyproject.toml; do
    [[ -e $d ]] && cp -r "$d" "$A/proj/"
  done
  cat COMMIT 2>/dev/null > "$A/proj/COMMIT" || echo "working tree (no git)" > "$A/proj/COMMIT"
fi
echo "proj: $(cat "$A/proj/COMMIT") $(du -sh "$A/proj" | cut -f1)"

# .whl/: the device wheels, a link to the repo's .whl/ (carried anyway; a copy would double the carry)
[[ -e $A/.whl ]] || ln -s ../.whl "$A/.whl"
echo ".whl: $(ls "$A/.whl" | wc -l) wheels; lazy-importer / mup (FlexTok only): $(ls "$A/.whl" | grep -ci -e lazy -e mup)"
echo ".anchors: $(du -sh "$A" | cut -f1) in all"
exit $missing
