#!/usr/bin/env bash
# usage (in a demo-work folder with its run; RUN below): bash scripts/measure_exit.sh CODE_ROOT
# CODE_ROOT: a checkout or `git archive <commit> liverctl | tar -x -C DIR` of the code to time (PYTHONPATH).
# time of `liverctl submit` (demo run), wall, and time from its last output line to the process's end
P=$1
export LIVERCTL_PYTHON=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
python3 - "$P" <<'PY'
import subprocess, sys, time, os
env = dict(os.environ, PYTHONPATH=sys.argv[1])
t0 = time.perf_counter()
p = subprocess.Popen([os.environ["LIVERCTL_PYTHON"], "-m", "liverctl", "submit", "--run", os.environ.get("RUN", "runs/demo"),
    "--store", "store/liver.zarr", "--out", "/tmp/exit-sub.csv", "--postprocess", "auto"], env=env,
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
last = t0
for line in p.stdout:
    last = time.perf_counter()
p.wait(); end = time.perf_counter()
print(f"{sys.argv[1]}: rc={p.returncode} wall {end-t0:.2f} s, last line -> exit {end-last:.2f} s")
PY
