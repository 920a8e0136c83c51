#!/usr/bin/env bash
# The GPU check (issue "Proven on a GPU"), in one device call of well under 10 minutes:
#   1. pytest -m gpu                      2. v5 512x512 batch 16: model only vs the full pipeline, bf16 and fp16
#   3. the NaN story: v5-focal in fp16, the notebooks' way vs liverctl's; the guard's events on CUDA
#   4. the whole chain at 512x512 (synth, ingest, train v5, submit hflip, evaluate), seconds per stage
#   5. torchrun --nproc_per_node 1 (NCCL) runs a short training
#   and, with what is left, `liverctl bench --only training` (its GPU row: pipeline vs model only)
# Each part has its own time limit and writes its log and figures (JSON) into a parts folder as it goes; after
# every part OUT gets gpu-check.json, gpu-check.md and parts.tar.gz (all parts' logs and JSON) anew, so a part
# that fails or times out, or a call cut short, leaves the others' figures. Three files: the device tool
# brings back at most 8 from OUT.
#
# On the device machine, with the wheels of scripts/device-wheels.sh in .whl (the device's copy of the tree has
# no .git: name the commit, `git rev-parse --short HEAD` here, so that the figures say what they measured):
#   run(carry=[".whl"], command="GPU_CHECK_COMMIT=<hash> bash scripts/gpu-check.sh $OUT", timeout_s=560)
# Before spending device time, dry-run it on a CPU in a twin of the device's Python: scripts/device-twin.sh
# (GPU_CHECK_ALLOW_CPU=1 runs model-only and the NaN story on the CPU too, at the small sizes it sets).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu-check-out}}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/site}   # where the wheels of .whl are installed (the device's image lacks them)
if [[ -d .whl ]] && ! "$PY" -c 'import segmentation_models_pytorch' 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || { echo "wheel install failed" >&2; exit 1; }
fi
export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}
LIVERCTL=("$PY" -m liverctl.cli)
CPUS=$(nproc)
SIZE=${GPU_CHECK_SIZE:-512}
BATCH=${GPU_CHECK_BATCH:-16}
DRY=(${GPU_CHECK_ALLOW_CPU:+--allow-cpu})   # a CPU dry run: model-only and nan-story on the CPU
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check-work}
PARTS=$WORK/parts
rm -rf "$WORK"; mkdir -p "$PARTS"
: > "$PARTS/stages.tsv"

BUDGET=${GPU_CHECK_BUDGET:-500}   # seconds for the whole check; each part gets at most what is left

# publish: the summary of the parts so far, and all their files packed, into OUT (each file replaced whole)
publish() {
  "$PY" scripts/gpu_check.py summary --out "$PARTS" --quiet > "$PARTS/summary.log" 2>&1
  for f in gpu-check.json gpu-check.md; do
    [[ -f $PARTS/$f ]] && cp "$PARTS/$f" "$OUT/$f.tmp" && mv "$OUT/$f.tmp" "$OUT/$f"
  done
  local events=(); [[ -d $WORK/runs ]] && events=($(cd "$WORK" && ls runs/*/events.jsonl 2>/dev/null))
  tar -czf "$OUT/parts.tar.gz.tmp" -C "$WORK" parts "${events[@]}" && mv "$OUT/parts.tar.gz.tmp" "$OUT/parts.tar.gz"
}
# part NAME LIMIT_S COMMAND...: run with a time limit (never past the budget), log to PARTS/NAME.log,
# record exit status and seconds in PARTS/stages.tsv. A part with no budget left is skipped (status 'skipped').
part() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS left=$((BUDGET - SECONDS - 15))
  (( left < limit )) && limit=$left
  if (( limit < 10 )); then printf '%s\tskipped\t0\n' "$name" >> "$PARTS/stages.tsv"; return 0; fi
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" > "$PARTS/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$PARTS/stages.tsv"
  tail -n 3 "$PARTS/$name.log"
  publish
  return 0
}
# figures NAME COMMAND...: a gpu_check.py reader of what a part left (a run's events, a submission). The
# next part's publish (or the last) brings it to OUT; the part's own publish already packed the run's events.
figures() {
  local name=$1; shift
  "$@" --out "$PARTS" --name "$name" > /dev/null 2>> "$PARTS/figures.log"
}
# A training on the chain's store, one loader worker per core; add --preset, --name and the rest.
TRAIN=("${LIVERCTL[@]}" train --store "$WORK/store.zarr" --runs-dir "$WORK/runs" --quiet
       --set model.encoder_weights=none --set "data.num_workers=$CPUS" --set "data.input_size=$SIZE"
       --set "train.batch_size=$BATCH" --set train.log_every=2   # a samples/s figure every 2 steps
       --set "train.steps_per_epoch=${GPU_CHECK_STEPS:-0}")   # 0: whole epochs; a CPU dry run sets a few

part env 30 "$PY" scripts/gpu_check.py env --out "$PARTS"
# every module the parts import, so that a wheel missing from .whl is named at once (see device-wheels.sh)
part imports 30 "$PY" -c 'import importlib, sys
names = "liverctl.cli liverctl.watch.app segmentation_models_pytorch albumentations zarr nibabel cc3d textual_plotext tomli_w"
missing = []
for name in names.split():
    try:
        importlib.import_module(name)
    except ImportError as exc:
        missing.append(f"{name} ({exc})")
sys.exit("missing: " + "; ".join(missing) if missing else print("imports ok"))'
part pytest_gpu 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider -rs
part synth 60 "${LIVERCTL[@]}" synth "$WORK/data" --cases 8 --test-cases 2 --size "$SIZE" --slices 64 --seed 0
part ingest 45 "${LIVERCTL[@]}" ingest "$WORK/data" --store "$WORK/store.zarr" --workers "$CPUS"
part model_only 75 "$PY" scripts/gpu_check.py model-only --out "$PARTS" --size "$SIZE" --batch "$BATCH" \
  --steps "${GPU_CHECK_STEPS:-20}" "${DRY[@]}"
# The full pipeline: the trainer itself, from the store, with one loader worker per core.
for amp in bf16 fp16; do
  part "train_$amp" 60 "${TRAIN[@]}" --preset v5 --name "pipe-$amp" --epochs 2 --set "train.amp=$amp"
  figures "train_$amp" "$PY" scripts/gpu_check.py events --run "$WORK/runs/pipe-$amp"
done
part nan_story 80 "$PY" scripts/gpu_check.py nan-story --out "$PARTS" --size "$SIZE" --batch "$BATCH" \
  --steps "${GPU_CHECK_NAN_STEPS:-200}" "${DRY[@]}"
part train_v5focal_fp16 50 "${TRAIN[@]}" --preset v5-focal --name focal --epochs 2 --set train.amp=fp16
figures train_v5focal_fp16 "$PY" scripts/gpu_check.py events --run "$WORK/runs/focal"
part train_injected_nan 40 "${TRAIN[@]}" --preset v5 --name injected --epochs 1 --set train.steps_per_epoch=12 --set train.amp=fp16 \
  --set 'train.inject_nan_at_steps=[3,4,5,6]'
figures train_injected_nan "$PY" scripts/gpu_check.py events --run "$WORK/runs/injected"
part submit 45 "${LIVERCTL[@]}" submit --run "$WORK/runs/pipe-bf16" --store "$WORK/store.zarr" --tta hflip \
  --out "$WORK/submission.csv"
figures submit_figures "$PY" scripts/gpu_check.py submission --run "$WORK/runs/pipe-bf16"
part evaluate 20 "${LIVERCTL[@]}" evaluate "$WORK/submission.csv" --labels "$WORK/data/test_labels" --json "$PARTS/evaluate.json"
part torchrun_nccl 60 "$PY" -m torch.distributed.run --nproc_per_node 1 -m liverctl.cli train --preset demo \
  --store "$WORK/store.zarr" --runs-dir "$WORK/runs" --name ddp --quiet --epochs 1 \
  --set train.steps_per_epoch=10 --set model.encoder_weights=none
figures train_torchrun "$PY" scripts/gpu_check.py events --run "$WORK/runs/ddp"
# last, with what is left of the budget: the bench's own GPU row (pipeline vs model only, all the cores)
part bench_training 100 "${LIVERCTL[@]}" bench --only training --no-real --cases 4 --slices 16 --size "$SIZE" \
  --workdir "$WORK/bench" --json "$PARTS/bench_training.json"
publish
cat "$OUT/gpu-check.md"
