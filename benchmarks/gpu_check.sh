#!/usr/bin/env bash
# The one prepared check for a lent GPU machine (issue 15): every figure the CUDA paths need, as JSON lines.
#
# On the device machine (torch 2.11 + CUDA, Python 3.12, no decord/av/zarr: carried as wheels in .whl/,
# annotations carried gzipped in .gpu/; see docs/PERFORMANCE.md "GPU check" for the exact call):
#     bash benchmarks/gpu_check.sh
# Here, on a CPU, tiny sizes, to check the script itself:
#     bash benchmarks/gpu_check.sh --dry-run
#
# Every step is independent: one that fails or overruns its time prints {"step": ..., "error": ...}
# and the rest go on. Budget: the step limits add up to 580 s; expected well under 8 minutes on an H100/H200. A full log goes to $OUT/gpu_check.log
# when $OUT is set (the device tool brings that folder back).
set -u
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_check.log
: > "$LOG"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)

if [ $DRY = 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

ANN=$WORK/ann
mkdir -p "$ANN"
if [ $DRY = 1 ]; then
  DEV=cpu; cp ../shared/data/activitynet_captions/{train_modified,val_1}.json "$ANN"/ 2>/dev/null \
    || cp /work/shared/data/activitynet_captions/{train_modified,val_1}.json "$ANN"/
else
  DEV=cuda; for f in .gpu/*.json.gz; do gunzip -c "$f" > "$ANN/$(basename "${f%.gz}")"; done
fi

# step NAME SECONDS CMD...: run CMD with a time limit; its stdout JSON lines pass through, stderr goes to the log.
step() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name: $*" >>"$LOG"
  timeout -k 10 "$limit" "$@" 2>>"$LOG" | tee -a "$LOG" | grep '^{' 
  local rc=${PIPESTATUS[0]}
  if [ "$rc" != 0 ]; then
    local why; why=$(tail -n 3 "$LOG" | tr '"\\\n' "'/ " | cut -c1-300)
    [ "$rc" = 124 ] && why="over its ${limit} s limit"
    printf '{"step": "%s", "error": "%s", "rc": %s, "seconds": %s}\n' "$name" "$why" "$rc" $((SECONDS - t0))
  fi
}

step versions 60 "$PY" - <<'PYEOF'
import json, platform, importlib
import torch
v = {"step": "versions", "python": platform.python_version(), "torch": torch.__version__,
     "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
     "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
for m in ("numpy", "av", "decord", "zarr", "numcodecs", "h5py"):
    try:
        v[m] = importlib.import_module(m).__version__
    except Exception as exc:
        v[m] = f"missing: {type(exc).__name__}"
print(json.dumps(v))
PYEOF

if [ $DRY = 1 ]; then
  step c3d 300 "$PY" benchmarks/bench_c3d.py --device cpu --width 0.0625 --batches 2 4 --clips 4 --rounds 1 \
    --variants fp32,fp32_cl --extractor
  step decode_scaling 120 "$PY" benchmarks/bench_extract.py --decode-scaling 1 2 --corpus-seconds 2
  step corpus 300 "$PY" benchmarks/bench_extract.py --corpus 2 --corpus-seconds 2 --corpus-width 0.0625 \
    --decode-workers 1 2 --device cpu
  for enc in linear bilstm; do
    step "train_$enc" 300 "$PY" benchmarks/bench_train.py --annotations "$ANN/train_modified.json" --store-videos 20 \
      --steps 2 --batch-size 4 --num-workers 0 --device cpu --precision auto --encoder $enc --store "$WORK/train.zarr"
  done
  for b in 4 8; do
    step "decode_batch$b" 300 "$PY" benchmarks/bench_eval.py --annotations "$ANN/val_1.json" --skip-score \
      --decode-segments 8 --beams 1 --max-len 4 --batch-size $b --device cpu --compile never
  done
  step decode_compiled 300 "$PY" benchmarks/bench_eval.py --annotations "$ANN/val_1.json" --skip-score \
    --decode-segments 8 --beams 3 --max-len 4 --batch-size 8 --device cpu --compile always
else
  # bare C3D, full size: CUDA events, batch 64/128/256, fp32 vs channels-last and bf16; agreement on 256 clips
  step c3d 100 "$PY" benchmarks/bench_c3d.py --device cuda --width 1.0 --batches 64 128 256 --clips 256 \
    --rounds 3 --variants fp32,fp32_cl,bf16,bf16_cl --extractor
  step decode_scaling 60 "$PY" benchmarks/bench_extract.py --decode-scaling 1 2 4 8 16 --corpus-seconds 60 \
    --video-dir "$WORK/videos"
  step corpus 120 "$PY" benchmarks/bench_extract.py --corpus 32 --corpus-seconds 60 --decode-workers 8 14 \
    --device cuda --precision auto --batch-size 128 --video-dir "$WORK/videos"
  for enc in linear bilstm; do
    step "train_$enc" 60 "$PY" benchmarks/bench_train.py --annotations "$ANN/train_modified.json" --store-videos 1000 \
      --steps 300 --device cuda --precision auto --encoder $enc --store "$WORK/train.zarr"
  done
  for b in 64 512; do
    step "decode_batch$b" 40 "$PY" benchmarks/bench_eval.py --annotations "$ANN/val_1.json" --skip-score \
      --decode-segments 4096 --beams 1 3 --max-len 20 --batch-size $b --device cuda --compile never
  done
  # decode.compile on CUDA (inductor + triton; never run on a GPU yet): compile time and the beam-3 gain
  step decode_compiled 40 "$PY" benchmarks/bench_eval.py --annotations "$ANN/val_1.json" --skip-score \
    --decode-segments 4096 --beams 3 --max-len 20 --batch-size 512 --device cuda --compile always
fi
rm -rf "$WORK"
echo '{"step": "done"}'
