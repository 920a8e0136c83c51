#!/usr/bin/env bash
# The wheels the GPU check (scripts/gpu-check.sh) needs on the device machine, into DIR (default .whl):
# ../shared/gpu/wheels.sh's list, plus what liverctl needs beyond that list, at the versions in .venv.
#
#   bash scripts/device-wheels.sh [DIR]
#
# The extras: textual-plotext and plotext (liverctl.watch's charts). Without them `pytest -m gpu` stops at
# collecting tests/watch ("1 error during collection"), as a dry run on a twin of the device image showed
# (scripts/device-twin.sh). The folder is built beside DIR and renamed into place, so a failed download
# never leaves a DIR that looks complete. DIR must be ignored by git (.gitignore has /.whl/).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
pip_here=${PIP_HERE:-.venv/bin/pip}
shared=${SHARED_WHEELS:-../shared/gpu/wheels.sh}
[[ -x $pip_here ]] || { echo "device-wheels: $pip_here not found: run 'make install' first" >&2; exit 1; }
[[ -f $shared ]] || { echo "device-wheels: $shared not found" >&2; exit 1; }
extras=(textual-plotext plotext)

tmp="$dest.partial"
rm -rf "$tmp"
PIP_HERE=$pip_here bash "$shared" "$tmp"
for n in "${extras[@]}"; do
  v=$("$pip_here" show "$n" 2>/dev/null | awk '/^Version:/{print $2}')
  [[ -n $v ]] || { echo "device-wheels: $n is not installed in .venv" >&2; exit 1; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$tmp" "$n==$v" 2>&1 \
    | grep -v '^WARNING: Location' || true
  ls "$tmp" | grep -qi "^${n//-/_}-$v-" || { echo "device-wheels: no wheel of $n==$v was fetched" >&2; exit 1; }
done
# one version of each: two stop the device's whole `pip install --target`
dups=$(ls "$tmp" | sed 's/-.*//' | tr 'A-Z' 'a-z' | sort | uniq -d)
[[ -z $dups ]] || { echo "device-wheels: more than one wheel of: $dups" >&2; exit 1; }
rm -rf "$dest"
mv "$tmp" "$dest"
echo "device-wheels: $(ls "$dest" | wc -l) wheels, $(du -sh "$dest" | cut -f1), in $dest"
