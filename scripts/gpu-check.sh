#!/usr/bin/env bash
# The GPU check (issue "Proven on a GPU"), in one device call of well under 10 minutes:
#   1. pytest -m gpu                      2. v5 512x512 batch 16: model only vs the full pipeline, bf16 and fp16
#   3. the NaN story: v5-focal in fp16, the notebooks' way vs liverctl's; the guard's events on CUDA
#   4. the whole chain at 512x512 (synth, ingest, train v5, submit hflip, evaluate), seconds per stage
#   5. torchrun --nproc_per_node 1 (NCCL) runs a short training
# Each part has its own time limit and writes its figures under OUT as it goes (JSON per part, then
# gpu-check.json and gpu-check.md), so a part that fails or times out leaves the others' figures.
#
# On the device machine (see ../shared/gpu/wheels.sh for the wheels):
#   run(carry=[".whl"], command="bash scripts/gpu-check.sh $OUT")
# Locally on a CPU only the parts that need no GPU run; it still exercises the script end to end.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu-check-out}}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

PY=${PYTHON:-python3}
if [[ -d .whl ]] && ! "$PY" -c 'import segmentation_models_pytorch' 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed" >&2; exit 1; }
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
LIVERCTL=("$PY" -m liverctl.cli)
CPUS=$(nproc)
SIZE=${GPU_CHECK_SIZE:-512}
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check-work}
rm -rf "$WORK"; mkdir -p "$WORK"
: > "$OUT/stages.tsv"

BUDGET=${GPU_CHECK_BUDGET:-500}   # seconds for the whole check; each part gets at most what is left

# part NAME LIMIT_S COMMAND...: run with a time limit (never past the budget), log to OUT/NAME.log,
# record exit status and seconds in OUT/stages.tsv. A part with no budget left is skipped (status 'skipped').
part() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS left=$((BUDGET - SECONDS - 15))
  (( left < limit )) && limit=$left
  if (( limit < 10 )); then printf '%s\tskipped\t0\n' "$name" >> "$OUT/stages.tsv"; return 0; fi
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/stages.tsv"
  tail -n 3 "$OUT/$name.log"
  return 0
}
# A training on the chain's store, one loader worker per core; add --preset, --name and the rest.
TRAIN=("${LIVERCTL[@]}" train --store "$WORK/store.zarr" --runs-dir "$WORK/runs" --quiet
       --set model.encoder_weights=none --set "data.num_workers=$CPUS" --set "data.input_size=$SIZE"
       --set "train.steps_per_epoch=${GPU_CHECK_STEPS:-0}")   # 0: whole epochs; a CPU dry run sets a few

part env 30 "$PY" scripts/gpu_check.py env --out "$OUT"
part pytest_gpu 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider
part synth 60 "${LIVERCTL[@]}" synth "$WORK/data" --cases 8 --test-cases 2 --size "$SIZE" --slices 64 --seed 0
part ingest 45 "${LIVERCTL[@]}" ingest "$WORK/data" --store "$WORK/store.zarr" --workers "$CPUS"
part model_only 75 "$PY" scripts/gpu_check.py model-only --out "$OUT" --size "$SIZE" --steps 20
# The full pipeline: the trainer itself, from the store, with one loader worker per core.
for amp in bf16 fp16; do
  part "train_$amp" 60 "${TRAIN[@]}" --preset v5 --name "pipe-$amp" --epochs 2 --set "train.amp=$amp"
  "$PY" scripts/gpu_check.py events --out "$OUT" --run "$WORK/runs/pipe-$amp" --name "train_$amp" >/dev/null
done
part nan_story 80 "$PY" scripts/gpu_check.py nan-story --out "$OUT" --size "$SIZE" --steps 200
part train_v5focal_fp16 50 "${TRAIN[@]}" --preset v5-focal --name focal --epochs 2 --set train.amp=fp16
"$PY" scripts/gpu_check.py events --out "$OUT" --run "$WORK/runs/focal" --name train_v5focal_fp16 >/dev/null
part train_injected_nan 40 "${TRAIN[@]}" --preset v5 --name injected --epochs 1 --set train.steps_per_epoch=12 --set train.amp=fp16 \
  --set 'train.inject_nan_at_steps=[3,4,5,6]'
"$PY" scripts/gpu_check.py events --out "$OUT" --run "$WORK/runs/injected" --name train_injected_nan >/dev/null
part submit 45 "${LIVERCTL[@]}" submit --run "$WORK/runs/pipe-bf16" --store "$WORK/store.zarr" --tta hflip \
  --out "$WORK/submission.csv"
part evaluate 20 "${LIVERCTL[@]}" evaluate "$WORK/submission.csv" --labels "$WORK/data/test_labels" --json "$OUT/evaluate.json"
part torchrun_nccl 60 "$PY" -m torch.distributed.run --nproc_per_node 1 -m liverctl.cli train --preset demo \
  --store "$WORK/store.zarr" --runs-dir "$WORK/runs" --name ddp --quiet --epochs 1 \
  --set train.steps_per_epoch=10 --set model.encoder_weights=none
"$PY" scripts/gpu_check.py events --out "$OUT" --run "$WORK/runs/ddp" --name train_torchrun >/dev/null
"$PY" scripts/gpu_check.py summary --out "$OUT"
