#!/usr/bin/env bash
# WavTokenizer on one H200 (~9 min in all). Phases (PHASES="tests bench train", default all three;
# "profile" only on request):
#   tests  GPU tests (tests/test_wavtokenizer_gpu.py) + fixture parity                              (~1.5 min)
#   bench  `bench tokenizer wavtokenizer` at the released 75 tok/s size, batch 1 and 32 x 10 s clips,
#          fp32/bf16; eager, CUDA-graphed and compiled                                             (~2.5 min)
#   train  5 min 45 s (MAX_TIME) of configs/tokenizers/wavtokenizer/short_75.yaml (the small_75 model with
#          the short-run recipe) on shards of .device/data/speech24k (90/10 split): held-out mel distance / STOI / PESQ
#          every ~60 s of training -> $OUT/curve.txt (+ curve_summary.txt), 4 s FLAC reconstructions and
#          references -> $OUT/samples/, whole held-out files -> $OUT/recon_full/ (FLAC + metrics.json), the
#          command -> $OUT/command.txt, Lightning's metrics.csv (train losses, codebook stats) -> $OUT/metrics.csv
#                                                                                                   (~7 min)
# COMPILE (default 1 on a GPU, 0 on CPU) trains with model.compile true: the training forwards through
# torch.compile (tokenizers/wavtokenizer/module.py; the step is launch-bound, docs/speed.md); COMPILE=0 is eager.
# COMPILE_PARTS=encoder,backbone,mpd compiles only those (default: all of the module's COMPILE_PARTS; leave out
# the FFT users mel,mrd,dac where their compiled backward fails, as tools/gpu/speed_session.sh's rows show).
# The <= 10-minute run of issue 22 (one device call, carry .whl and .device/data; ~8.5 min in all):
#   PHASES=train MAX_TIME=00:00:07:00 OUT=$OUT bash tools/gpu/wavtokenizer.sh
# ENC_LR_SCALE overrides model.encoder_lr_scale (config 1 = paper; 0.04 was the fix before the encoder init).
# GAN_RAMP overrides model.gan_ramp_steps (config 1000; 0 = the paper's full GAN weights at once) as the control.
# DISC_LR overrides the discriminators' lr (model.disc_optimizer; config 5e-5, paper 2e-4); BATCH the batch size (16).
# ACCEL=cpu runs on CPU; QUICK=1 shrinks the train phase (batch 2, 0.5 s crops, ~1 min) for a smoke run:
#   QUICK=1 ACCEL=cpu PHASES="train" OUT=/tmp/wt_smoke bash tools/gpu/wavtokenizer.sh
# Run from the repo root; the lead copies ../shared/data and ../shared/fixtures to .device/.
source tools/gpu/env.sh   # wheels, tokenforge namespace links, want(), ACCEL
set -x
OUT=${OUT:-/tmp/wavtokenizer_out}; mkdir -p "$OUT"
export TOKENFORGE_SHARED=$PWD/.device
W=${W:-$(mktemp -d /tmp/wavtokenizer_work.XXXX)}; mkdir -p "$W"
DATA=${DATA:-.device/data/speech24k}
[ -d "$DATA" ] || DATA=../shared/data/speech24k
DEVICE=$([ "$ACCEL" = cpu ] && echo cpu || echo cuda)

# 1. GPU tests (they print the compiled-vs-eager differences) and parity of the fixture
if want tests; then
timeout 240 python -m pytest tests/test_wavtokenizer_gpu.py -q -s -p no:cacheprovider 2>&1 | grep -v Warning \
  > "$OUT/tests_full.txt"
{ grep -E "compiled vs eager" "$OUT/tests_full.txt"; tail -15 "$OUT/tests_full.txt"; } | tee "$OUT/tests.txt"
timeout 60 python tools/check_parity.py .device/fixtures/wavtokenizer 2>&1 | tee "$OUT/parity.txt"
fi

# 2. benchmark table: random weights at the released size, 10 s clips (BENCHMARKS.md conditions)
if want bench; then
timeout 100 python -m tokenforge bench tokenizer wavtokenizer --device "$DEVICE" --variant small_75 --batches 1 32 \
  --repeats 10 2>&1 | tail -7 | tee "$OUT/bench_eager.md"
[ "$DEVICE" = cuda ] && timeout 60 python -m tokenforge bench tokenizer wavtokenizer --variant small_75 \
  --batches 1 32 --repeats 10 --fuse --mode graphed 2>&1 | tail -7 | tee "$OUT/bench_graphed.md"
timeout 150 python -m tokenforge bench tokenizer wavtokenizer --device "$DEVICE" --variant small_75 --batches 1 32 \
  --repeats 10 --dtypes bf16 --fuse --mode compiled 2>&1 | tail -5 | tee "$OUT/bench_compiled.md"
fi

# 2b. where a training batch spends its time (loader rate, ms per phase, top kernels) (~1.5 min)
if want profile; then
timeout 60 python -m tokenforge shards make audio "$DATA" "$W/profile_shards" --no-progress 2>&1 | tail -1
timeout 200 python tools/gpu/profile_wavtokenizer_step.py --shards "$W/profile_shards" 2>&1 | grep -v -i warn \
  | tee "$OUT/profile.txt"
fi

# 3. short training run on real speech; time-based held-out curve (HeldOutCurve callback)
if want train; then
if [ -n "$QUICK" ]; then  # CPU smoke run: same config and code paths, tiny batches and budget
  BATCH=2 SEGMENT=12000 MAX_TIME=00:00:01:00 EVERY=20 CLIPS=2 CLIP_SECONDS=1 WORKERS=0 PRECISION=32-true
  MEL_STEPS=10
fi
BATCH=${BATCH:-16} SEGMENT=${SEGMENT:-48000} MAX_TIME=${MAX_TIME:-00:00:05:45} EVERY=${EVERY:-60}
CLIPS=${CLIPS:-8} CLIP_SECONDS=${CLIP_SECONDS:-4} WORKERS=${WORKERS:-6} PRECISION=${PRECISION:-bf16-mixed}
python -c "import pesq, pystoi; print('pesq', pesq.__file__, '| pystoi', pystoi.__file__)" 2>&1 \
  | tail -1 | tee "$OUT/pesq_check.txt"   # wideband PESQ needs the carried cp312 wheel (.whl/, env.sh)
timeout 60 python -m tokenforge shards make audio "$DATA" "$W/shards" --val-fraction 0.1 --no-progress 2>&1 \
  | tail -2 | tee "$OUT/shards.txt"
mkdir -p "$W/val_audio" && (cd "$W/val_audio" && for t in "$W/shards"/val-*.tar; do tar -xf "$t"; done)
CMD=(python -m tokenforge fit --config configs/tokenizers/wavtokenizer/base.yaml
  --config configs/tokenizers/wavtokenizer/short_75.yaml
  --data.init_args.train "$W/shards" --data.init_args.val "$W/shards" --data.init_args.batch_size "$BATCH"
  --data.init_args.segment_samples "$SEGMENT" --data.init_args.num_workers "$WORKERS"
  --trainer.accelerator "$ACCEL" --trainer.precision "$PRECISION" --trainer.max_time "$MAX_TIME"
  --trainer.default_root_dir "$W" --trainer.logger.init_args.save_dir "$W/logs"
  --trainer.callbacks+=tokenforge.tokenizers.wavtokenizer.curve.HeldOutCurve
  --trainer.callbacks.audio "$W/val_audio" --trainer.callbacks.out "$OUT" --trainer.callbacks.every_seconds "$EVERY"
  --trainer.callbacks.max_clips "$CLIPS" --trainer.callbacks.seconds "$CLIP_SECONDS")
[ -n "$MEL_STEPS" ] && CMD+=(--model.init_args.pretrain_mel_steps "$MEL_STEPS")
COMPILE=${COMPILE:-$([ "$ACCEL" = cpu ] && echo 0 || echo 1)}
[ "$COMPILE" = 1 ] && CMD+=(--model.init_args.compile true)
[ "$COMPILE" = 1 ] && [ -n "$COMPILE_PARTS" ] && CMD+=(--model.init_args.compile_parts "[$COMPILE_PARTS]")
[ -n "$GAN_RAMP" ] && CMD+=(--model.init_args.gan_ramp_steps "$GAN_RAMP")
[ -n "$DISC_LR" ] && CMD+=(--model.init_args.disc_optimizer.init_args.lr "$DISC_LR")
[ -n "$ENC_LR_SCALE" ] && CMD+=(--model.init_args.encoder_lr_scale "$ENC_LR_SCALE")  # 1 = the paper's single lr
echo "${CMD[*]}" > "$OUT/command.txt"
IFS=: read -r _ hh mm ss <<< "$MAX_TIME"
timeout $(( 10#$hh * 3600 + 10#$mm * 60 + 10#$ss + 60 )) "${CMD[@]}" 2>&1 | grep -v -i warn | tail -40 | tee "$OUT/fit.txt"
METRICS=$(find "$W/logs" -name metrics.csv | head -1)
[ -n "$METRICS" ] && cp "$METRICS" "$OUT/metrics.csv"
echo "held-out curve (every ~${EVERY} s of training; pesq '-' = package missing):" | tee "$OUT/curve_summary.txt"
if command -v column >/dev/null; then column -t "$OUT/curve.txt"; else cat "$OUT/curve.txt"; fi \
  | tee -a "$OUT/curve_summary.txt"
python - "$OUT/curve.txt" <<'PY' 2>&1 | tee -a "$OUT/curve_summary.txt"
import sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
head, rows = rows[0], rows[1:]
col = {name: [r[i] for r in rows] for i, name in enumerate(head)}
for name in ("mel_distance", "stoi", "pesq", "usage"):
    v = [float(x) for x in col[name] if x != "-"]
    if len(v) >= 2:
        steady = all(b <= a for a, b in zip(v, v[1:])) if name == "mel_distance" else all(b >= a for a, b in zip(v, v[1:]))
        print(f"{name}: first {v[0]:.4g} last {v[-1]:.4g} best {min(v) if name == 'mel_distance' else max(v):.4g}"
              f" over {len(v)} evaluations; monotone: {steady}")
PY
CKPT=$(find "$W" -name last.ckpt | head -1)  # whole held-out files through the trained model, per-file metrics
[ -n "$CKPT" ] && timeout 60 python -m tokenforge reconstruct --model "$CKPT" "$W/val_audio" --out "$OUT/recon_full" \
  --device "$DEVICE" 2>&1 | tail -2 | tee "$OUT/recon_full.txt"
rm -f "$OUT"/recon_full/*.npy
ls -la "$OUT" "$OUT/samples" | head -40
fi
