#!/usr/bin/env bash
# One prepared check for a lent GPU machine (one H100 or H200), all within 8 minutes:
#   1. nvidia-smi and JAX's devices;
#   2. `diffcorrupt bench train` of DiT-XL/2 at 256x256 (SD latents 32x32x4, 1000 classes, bfloat16
#      compute): the largest batch of TRAIN_BATCHES that fits, tried in descending order, with its MFU;
#   3. `diffcorrupt bench sample` at the paper's settings (DPM-Solver++ 50 steps, guidance 1.75, bf16);
#   4. where torch with CUDA and diffusers are in the .venv, `diffcorrupt bench peers --what=sample`:
#      our sampler against diffusers' DiTPipeline loop on the same GPU (DDIM 50, guidance 1.75,
#      float32 on both sides), the ratio the issue's >= 1.5x target is about.
#     bash launch/gpu_check.sh            # the JSON lines also go to $OUT/gpu_check.jsonl when OUT is set
# Requirement: the machine has no network and this script installs nothing. It needs the repository
# with the .venv that `bash launch/setup.sh` builds, plus JAX's CUDA backend installed into it
# beforehand: `.venv/bin/pip install 'jax[cuda12]'`.
# Settings (environment): TRAIN_BATCHES (default "256 192 128 96 64 32"), TRAIN_STEPS (5),
# SAMPLE_BATCH (128), BUDGET_S (450: the whole run), SAMPLE_RESERVE_S (150: kept for the sampler and the peer),
# PY (.venv/bin/python). Compiles are cached in JAX_COMPILATION_CACHE_DIR (default
# /tmp/diffcorrupt-jax-cache), so a rerun on the same machine skips them (its compile_s is then the
# cache's load time). A batch that fails with RESOURCE_EXHAUSTED / out of memory is "does not fit".
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET_S="${BUDGET_S:-450}"
SAMPLE_RESERVE_S="${SAMPLE_RESERVE_S:-150}"
TRAIN_BATCHES="${TRAIN_BATCHES:-256 192 128 96 64 32}"
TRAIN_STEPS="${TRAIN_STEPS:-5}"
SAMPLE_BATCH="${SAMPLE_BATCH:-128}"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/diffcorrupt-jax-cache}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"  # the batch search wants it all
PY="${PY:-.venv/bin/python}"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
JSONL=/dev/null
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  JSONL="$OUT/gpu_check.jsonl"
fi

left() { echo $((START + BUDGET_S - $(date +%s) - ${1:-0})); }

# bench <seconds> <args...>: one benchmark under a time limit; its JSON line on stdout and in $JSONL,
# its stderr in $SCRATCH/stderr; the exit status of the benchmark (124 when the limit cut it off).
bench() {
  local limit=$1
  shift
  timeout "$limit" "$PY" -m diffcorrupt bench "$@" >"$SCRATCH/stdout" 2>"$SCRATCH/stderr"
  local status=$?
  if [ "$status" = 0 ]; then
    tail -n 1 "$SCRATCH/stdout" | tee -a "$JSONL"
  fi
  return "$status"
}

echo "== devices"
timeout 30 nvidia-smi || echo "gpu_check: nvidia-smi failed"
timeout 90 "$PY" -c 'import jax; print("jax", jax.__version__, jax.default_backend(), jax.devices())' \
  || { echo "gpu_check: JAX does not start; is jax[cuda12] installed in .venv?"; exit 1; }

echo "== train: DiT-XL/2, 32x32x4 latents, 1000 classes, bfloat16; batches $TRAIN_BATCHES"
FITTED=""
for batch in $TRAIN_BATCHES; do
  limit=$(left "$SAMPLE_RESERVE_S")
  if [ "$limit" -lt 30 ]; then
    echo "gpu_check: no time left for batch $batch (the sampler's share is kept)"
    break
  fi
  echo "-- batch $batch (limit ${limit}s)"
  bench "$limit" train --model=DiT-XL/2 --input_shape=32,32,4 --num_classes=1000 --dtype=bfloat16 \
    --batch_size="$batch" --steps="$TRAIN_STEPS"
  status=$?
  if [ "$status" = 0 ]; then
    FITTED=$batch
    break
  elif grep -qiE "RESOURCE_EXHAUSTED|out of memory" "$SCRATCH/stderr"; then
    echo "batch $batch does not fit"
  else
    echo "gpu_check: batch $batch failed for another reason (exit status $status; 124 = time limit):"
    tail -n 20 "$SCRATCH/stderr"
    break
  fi
done
if [ -n "$FITTED" ]; then
  tail -n 1 "$SCRATCH/stdout" | "$PY" -c 'import json, sys
r = json.loads(sys.stdin.read())
r.setdefault("mfu", "unknown (no peak for this device in PEAK_FLOPS)")
print("largest batch that fits: %(batch_size)s; %(images_per_s)s images/s, %(tflops_per_s_per_device)s TFLOP/s, "
      "MFU %(mfu)s, compile %(compile_s)s s, on %(device)s" % r)'
fi

PEER=0
if timeout 60 "$PY" -c 'import diffusers, torch; assert torch.cuda.is_available()' 2>/dev/null; then
  PEER=1
fi
PEER_RESERVE_S=$((PEER * 90))

echo "== sample: DiT-XL/2, DPM-Solver++(2M) 50 steps, guidance 1.75, bfloat16, batch $SAMPLE_BATCH"
limit=$(left $((5 + PEER_RESERVE_S)))
if [ "$limit" -lt 30 ]; then
  echo "gpu_check: no time left for the sampler"
elif ! bench "$limit" sample --model=DiT-XL/2 --input_shape=32,32,4 --num_classes=1000 --batch_size="$SAMPLE_BATCH" \
    --sampler=dpm --steps=50 --cfg_scale=1.75 --dtype=bfloat16; then
  echo "gpu_check: the sampler bench failed:"
  tail -n 20 "$SCRATCH/stderr"
fi

echo "== peer: DiT-XL/2 sampling beside diffusers' DiTPipeline loop on this GPU (DDIM 50, guidance 1.75, float32)"
limit=$(left 5)
if [ "$PEER" = 0 ]; then
  echo "gpu_check: no CUDA torch + diffusers in the .venv; install them (pip install -e '.[peers]' with a CUDA torch) for this ratio"
elif [ "$limit" -lt 30 ]; then
  echo "gpu_check: no time left for the peer"
elif ! bench "$limit" peers --what=sample --model=DiT-XL/2 --input_shape=32,32,4 --num_classes=1000 --batch_size=32 \
    --steps=50 --cfg_scale=1.75; then
  echo "gpu_check: the peer bench failed:"
  tail -n 20 "$SCRATCH/stderr"
fi
echo "gpu_check: done in $(($(date +%s) - START)) s${OUT:+; JSON lines in $JSONL}"
