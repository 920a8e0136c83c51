#!/usr/bin/env bash
# A dry run of scripts/gpu-check.sh on this CPU machine, in a twin of the device's Python, before device time
# is spent on it. The twin: Python 3.12 with the versions the device image was seen to hold (torch
# 2.11.0+cu130, torchvision 0.26.0, numpy 2.5.2, huggingface_hub 1.33.0) and the image's other packages that
# liverctl touches (timm, typer, rich, scipy, matplotlib, OpenCV, pytest), and none of those .whl brings.
# The check then runs as it would there: from a clean worktree of HEAD with .whl copied in, the wheels
# installed with `pip --target`, at small sizes, with model-only, the NaN story and the CUDA tests on the CPU.
#
#   bash scripts/device-twin.sh [OUT]     (OUT default /tmp/device-twin-out; the twin is $TWIN, default
#                                          /tmp/device-twin, about 5 GB downloaded on first use, ~2 min)
#   bash scripts/device-twin.sh --suite   the default test suite instead, on the device's stack (torch 2.11,
#                                          numpy 2.5, Python 3.12; pytest-asyncio added beside it), ~4 min
# What it caught first: .whl lacked textual-plotext and plotext, so `pytest -m gpu` could not collect.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
suite=0; [[ ${1:-} == --suite ]] && { suite=1; shift; }
out=${1:-/tmp/device-twin-out}
twin=${TWIN:-/tmp/device-twin}
py312=${PY312:-}
if [[ -z $py312 ]]; then   # the first Python 3.12 that runs (a pyenv shim may exist and refuse)
  for c in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
    "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { py312=$c; break; }
  done
fi
[[ -n $py312 ]] || { echo "device-twin: no Python 3.12 found (set PY312)" >&2; exit 1; }
if [[ ! -x $twin/bin/python3 ]] || ! "$twin/bin/python3" -c 'import torch, timm, cv2' 2>/dev/null; then
  rm -rf "$twin"
  "$py312" -m venv "$twin"
  "$twin/bin/pip" install -q torch==2.11.0 torchvision==0.26.0 numpy==2.5.2 huggingface_hub==1.33.0 timm typer \
    rich scipy matplotlib opencv-python-headless pytest pytest-timeout safetensors pyyaml psutil
fi
[[ -d .whl ]] || bash scripts/device-wheels.sh .whl
if (( suite )); then   # liverctl's own tests with the wheels' packages over the twin, as on the device
  site=/tmp/device-twin-suite
  rm -rf "$site"
  "$twin/bin/python3" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
  "$twin/bin/python3" -m pip install -q --no-compile --target "$site/tests" pytest-asyncio
  PYTHONPATH=$site:$site/tests:$root exec "$twin/bin/python3" -m pytest -q -p no:cacheprovider
fi
wt=$(mktemp -d /tmp/device-twin-tree.XXXXXX)
trap 'git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"' EXIT
git worktree add --detach -q "$wt" HEAD
cp -r .whl "$wt/"
rm -rf "$out" /tmp/device-twin-site
cd "$wt"
PYTHON=$twin/bin/python3 GPU_CHECK_SITE=/tmp/device-twin-site GPU_CHECK_WORK=/tmp/device-twin-work \
  GPU_CHECK_SIZE=${GPU_CHECK_SIZE:-64} GPU_CHECK_BATCH=${GPU_CHECK_BATCH:-4} GPU_CHECK_STEPS=${GPU_CHECK_STEPS:-3} \
  GPU_CHECK_NAN_STEPS=${GPU_CHECK_NAN_STEPS:-3} GPU_CHECK_BUDGET=${GPU_CHECK_BUDGET:-900} GPU_CHECK_ALLOW_CPU=1 \
  LIVERCTL_GPU_TESTS_ON_CPU=1 bash scripts/gpu-check.sh "$out"
echo "device-twin: the check's files are in $out (the device brings back at most 8): $(ls "$out" | xargs)"
