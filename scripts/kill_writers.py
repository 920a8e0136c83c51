"""Kill liverctl's writing commands at random moments and check what they leave (crash consistency).

    python scripts/kill_writers.py --seed 0 --kills 4 --work /tmp/kills [--commands submit,report] [--signals KILL]

For each command (synth, ingest, train, folds: `train --folds`, submit, postprocess, report, evaluate) and each
signal (KILL, TERM, INT), `--kills` times: start it in a fresh copy of a tiny demo setup, send the signal to its
process group after a random delay (seeded), then check that (1) no output looks complete that is not (a store
that opens holds every case, a checkpoint loads, a submission CSV is whole and recorded in submissions.jsonl, a
report's index.html has its pages, a scores JSON parses), (2) running the same command again works without
cleanup and leaves no temporary file of a dead process, and (3) `liverctl runs` does not call a killed run
running or completed. Prints one line per problem and a count per command; exit 1 when anything was found.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable
SYNTH = ["synth", "d", "--cases", "4", "--test-cases", "2", "--size", "64", "--slices", "16"]
TRAIN = ["train", "-p", "demo", "--store", "s.zarr", "--set", "data.input_size=64", "--epochs", "1", "-q"]
COMMANDS = {  # name -> (arguments, what the trial folder starts from, seconds a whole run takes here, about)
    "synth": (SYNTH, [], 1.5),
    "ingest": (["ingest", "d", "--store", "s.zarr"], ["d"], 2.0),
    "train": ([*TRAIN, "--name", "k"], ["d", "s.zarr"], 13.0),
    "folds": ([*TRAIN, "--name", "x", "--folds", "all"], ["d", "s.zarr"], 36.0),
    "submit": (["submit", "--run", "r1", "--store", "s.zarr", "--out", "sub.csv", "--save-masks", "masks",
                "--tta", "none"], ["s.zarr", "runs"], 9.0),
    "postprocess": (["postprocess", "masks", "clean"], ["masks"], 3.0),
    "report": (["report", "r1", "--out", "rep"], ["s.zarr", "runs"], 12.0),
    "evaluate": (["evaluate", "sub.csv", "--labels", "d/test_labels", "--json", "scores.json"], ["d", "sub.csv"], 3.0),
}
# what a killed writer may leave: atomic writes' `.NAME.<pid>.tmp` / `.<pid>.tmp.NAME`, hidden work folders
# (`.NAME.<pid>.XXXX.tmp`), a report moved aside (`.NAME.old-<pid>`), an ingest's `.NAME.ingest`, a submit's
# journal (`.submission.<pid>.pending`), zarr-python's `NAME.<uuid>.partial` (oof.zarr, the store's index)
LEFTOVER = re.compile(r"^\..*(\.tmp$|\.tmp\.|\.old-\d+$|\.ingest$|\.pending$)|.*\.[0-9a-f]{32}\.partial$")


def liverctl(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "liverctl", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def run(args: list[str], cwd: Path) -> tuple[int, str]:
    proc = liverctl(args, cwd)
    out, _ = proc.communicate()
    return proc.returncode, out


def setup(base: Path) -> None:
    """The demo inputs every trial copies from: data, store, one trained run, a submission and its masks."""
    if (base / "ready").exists():
        return
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    for args in (SYNTH, ["ingest", "d", "--store", "s.zarr"], [*TRAIN, "--name", "r1"],
                 ["submit", "--run", "r1", "--store", "s.zarr", "--out", "sub.csv", "--save-masks", "masks"]):
        rc, out = run(args, base)
        if rc:
            sys.exit(f"setup failed: liverctl {' '.join(args)}\n{out}")
    (base / "runs" / "r1" / "submissions.jsonl").unlink()
    (base / "ready").touch()


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if LEFTOVER.match(p.name))


def runs_rows(trial: Path) -> list[dict]:
    if not (trial / "runs").is_dir():
        return []
    rc, out = run(["runs", "--json"], trial)
    if rc:
        return [{"name": "?", "status": f"runs failed: {out.strip()[-200:]}"}]
    return json.loads(out)


def check_outputs(name: str, trial: Path, finished: bool) -> list[str]:
    """What looks complete but is not, after a kill (`finished`: the command had ended on its own)."""
    problems = []
    code = r"""
import json, sys, re
from pathlib import Path
name, finished = sys.argv[1], sys.argv[2] == "1"
out = []
if name == "ingest" and Path("s.zarr").exists():
    from liverctl.data.store import LiverStore
    from liverctl.errors import LiverctlError
    try:
        store = LiverStore.open("s.zarr")
        if len(store.case_ids()) != 6:
            out.append(f"store opens with {len(store.case_ids())} of 6 cases")
    except LiverctlError:
        pass
if name in ("train", "folds"):
    from liverctl.runs.checkpoint import load_checkpoint
    for pt in Path("runs").rglob("*.pt"):
        try:
            load_checkpoint(pt)
        except Exception as exc:
            out.append(f"{pt}: {exc}")
if name == "submit" and Path("sub.csv").exists():
    from liverctl.files import file_sha256
    from liverctl.infer.submission import read_submission
    try:
        from liverctl.data.store import LiverStore
        store = LiverStore.open("s.zarr")
        read_submission("sub.csv", {c: store.meta(c)["shape"] for c in store.case_ids("test")})
    except Exception as exc:
        out.append(f"sub.csv: {exc}")
    recorded = Path("runs/r1/submissions.jsonl")
    sha = file_sha256("sub.csv")
    if not recorded.exists() or sha not in recorded.read_text():
        out.append("sub.csv is in place but runs/r1/submissions.jsonl does not record it")
if name == "report" and Path("rep/index.html").exists():
    html = Path("rep/index.html").read_text()
    for src in re.findall(r'src="([^"]+)"', html):
        if not (Path("rep") / src).exists():
            out.append(f"rep/index.html shows {src}, which is missing")
if name == "evaluate" and Path("scores.json").exists():
    json.loads(Path("scores.json").read_text())
if name == "postprocess" and Path("clean").exists():
    import nibabel as nib
    for f in Path("clean").iterdir():
        if not f.name.startswith("."):
            nib.load(f).get_fdata()
print(json.dumps(out))
"""
    proc = subprocess.run([PY, "-c", code, name, "1" if finished else "0"], cwd=trial, capture_output=True, text=True)
    if proc.returncode:
        return [f"check failed: {proc.stderr.strip().splitlines()[-1:]}"]
    problems += json.loads(proc.stdout)
    if name in ("train", "folds") and not finished:
        for row in runs_rows(trial):
            if row.get("name") in ("k", "x") and row.get("status") in ("running", "completed"):
                problems.append(f"runs calls killed run {row['name']} {row['status']}")
    return problems


def trial(name: str, sig: signal.Signals, delay: float, base: Path, folder: Path) -> tuple[list[str], str]:
    """(problems, what the kill left: `finished` when the command ended before the signal, else its leftovers)."""
    args, inputs, _ = COMMANDS[name]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for item in inputs:
        src = base / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, folder / item)
    proc = liverctl(args, folder, start_new_session=True)
    try:
        proc.wait(delay)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
        os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return ["did not end within 90 s of the signal"], "?"
    with_pids = leftovers(folder)
    if proc.returncode == 0:  # it ended well all the same (the signal came as it finished): complete, not killed
        finished = True
    problems = check_outputs(name, folder, finished)
    if finished and name in ("train", "folds"):  # again, a completed run is refused; the outputs were checked
        return problems, "finished first"
    # the same command again, with --resume where train says so
    rc, out = run(args, folder)
    if rc and name in ("train", "folds") and "--resume" in out:
        rc, out = run(["train", "--resume", "k" if name == "train" else "x", "-q"], folder)
    if rc:
        problems.append(f"rerun failed (rc {rc}): {out.strip().splitlines()[-1:] }")
    left = leftovers(folder)
    if left:
        problems.append(f"left after the rerun: {', '.join(left)} (after the kill: {', '.join(with_pids) or 'none'})")
    if name in ("train", "folds"):
        for row in runs_rows(folder):
            if row.get("name") in ("k", "x") and row.get("status") != "completed":
                problems.append(f"after the rerun runs says {row['name']} is {row.get('status')}")
    if name == "submit" and rc == 0:
        lines = (folder / "runs/r1/submissions.jsonl").read_text().splitlines()
        if any(not line.strip() for line in lines):
            problems.append("submissions.jsonl holds a blank line")
    return problems, "finished first" if finished else f"left {', '.join(with_pids) or 'no temporary file'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kills", type=int, default=3, help="kills per command and signal")
    parser.add_argument("--work", type=Path, default=Path("/tmp/liverctl-kills"))
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--signals", default="KILL,TERM,INT")
    opts = parser.parse_args()
    # a background job of a shell starts with SIGINT ignored, and its children keep that through exec: put Python's
    # handler back, or every SIGINT trial tests a command that cannot be interrupted
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = random.Random(opts.seed)
    base = opts.work / "base"
    setup(base)
    found = 0
    for name in opts.commands.split(","):
        seconds = COMMANDS[name][2]
        for sig_name in opts.signals.split(","):
            sig = signal.Signals[f"SIG{sig_name}"]
            for i in range(opts.kills):
                delay = rng.uniform(0.3, seconds)
                started = time.monotonic()
                problems, left = trial(name, sig, delay, base, opts.work / "trial")
                found += bool(problems)
                print(f"{name} {sig.name} #{i} after {delay:.1f} s ({time.monotonic() - started:.0f} s, {left}): "
                      + ("; ".join(problems) if problems else "ok"), flush=True)
    print(f"{found} trials with problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
