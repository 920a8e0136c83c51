#!/usr/bin/env bash
# `make demo`: the whole chain on a CPU machine, in minutes:
#   synth -> ingest -> train (demo preset) -> submit -> evaluate, then the final scores.
# Usage: scripts/demo.sh [WORK_DIR]
# Smaller or larger: DEMO_CASES, DEMO_TEST_CASES, DEMO_SIZE, DEMO_SLICES (the phantoms), DEMO_EPOCHS and
# DEMO_STEPS (train.epochs and train.steps_per_epoch; default: the demo preset's own).
set -euo pipefail

WORK="${1:-demo-work}"
CASES="${DEMO_CASES:-8}"
TEST_CASES="${DEMO_TEST_CASES:-2}"
SIZE="${DEMO_SIZE:-128}"
SLICES="${DEMO_SLICES:-64}"
train_args=()
[[ -n "${DEMO_EPOCHS:-}" ]] && train_args+=(--epochs "$DEMO_EPOCHS")
[[ -n "${DEMO_STEPS:-}" ]] && train_args+=(--set "train.steps_per_epoch=$DEMO_STEPS")
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1

mkdir -p "$WORK"
cd "$WORK"
started=$(date +%s)
step() { printf '\n== %s (%ds)\n' "$1" "$(( $(date +%s) - started ))"; }

step "synth: $CASES training + $TEST_CASES test phantoms of ${SIZE}x${SIZE}x${SLICES}"
rm -rf data
liverctl synth data --cases "$CASES" --test-cases "$TEST_CASES" --size "$SIZE" --slices "$SLICES"

step "ingest -> store/liver.zarr"
liverctl ingest data --store store/liver.zarr

run="demo-$(date +%Y%m%d-%H%M%S)"
step "train --preset demo -> runs/$run"
liverctl train --preset demo --store store/liver.zarr --name "$run" --runs-dir runs ${train_args[@]+"${train_args[@]}"}

step "submit (largest-component clean-up chosen or not by auto on the validation fold)"
liverctl submit --run "runs/$run" --store store/liver.zarr --out submission.csv --postprocess auto

step "evaluate against data/test_labels"
liverctl evaluate submission.csv --labels data/test_labels

elapsed=$(( $(date +%s) - started ))
printf '\ndemo finished in %dm%02ds; work folder: %s\n' $(( elapsed / 60 )) $(( elapsed % 60 )) "$(pwd)"
