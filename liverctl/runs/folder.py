"""Run folders (`runs/<name>/`): names, the one-writer lock, tidying after a kill, resume look-up, and
the `--time-limit` budget."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

from liverctl.errors import LiverctlError

# The names of the files in a run folder, declared here only.
CONFIG_FILE = "config.toml"  # the resolved config the run trained with
EVENTS_FILE = "events.jsonl"  # the event log (liverctl.runs.events)
SUBMISSIONS_FILE = "submissions.jsonl"  # one line per submission made from the run
CHECKPOINT_DIR = "checkpoints"  # best.pt / last.pt and their .json sidecars
LOCK_FILE = ".lock"  # holds {pid, host, since} of the process writing the run


def checkpoint_path(run_dir: str | os.PathLike, which: str) -> Path:
    """`runs/<name>/checkpoints/<which>.pt` (which: best | last)."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{which}.pt"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """"11h", "90m", "1h30m", "45s", "3600" -> seconds."""
    s = text.strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2).lower()]
        pos = m.end()
    if not s or pos != len(s) or total <= 0:
        raise LiverctlError(f"--time-limit: cannot read '{text}' (examples: 11h, 90m, 1h30m, 3600s)")
    return total


def default_run_name(preset: str) -> str:
    return f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_dir_for(runs_root: str | Path, name: str | None, preset: str) -> Path:
    """`runs_root/<name>` for a plain `--name` (default: <preset>-<timestamp>); nothing is created.

    A name is one folder name: letters, digits and . _ + - , not only dots, so it never leaves runs_root.
    """
    name = name or default_run_name(preset)
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", name) or set(name) == {"."}:
        raise LiverctlError(f"--name '{name}': use a plain name of letters, digits and . _ + - (not . or ..)")
    return Path(runs_root) / name


def check_fresh(run_dir: Path) -> None:
    """Refuse a run folder that already holds anything but the lock (use --resume)."""
    if any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        raise LiverctlError(
            f"run '{run_dir.name}' already exists; continue it with --resume {run_dir.name} or pick another --name",
            path=run_dir,
        )


class RunLock:
    """The one writer of a run folder: an exclusive `flock` on `<run>/.lock`, held for the whole run.

    The kernel releases it when the process ends, however it ends (kill -9, OOM), so a dead run never
    blocks its own resume. A second process is refused at once, with the holder's pid, host and start.
    Only the rank that writes the run (rank 0) takes it. Use as a context manager.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fh = None

    def acquire(self) -> RunLock:
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another process holds it
            fh.seek(0)
            holder = _describe_holder(fh.read(4096))
            fh.close()
            raise LiverctlError(
                f"run '{self.run_dir.name}' is being written by {holder}; wait for it to end or stop it "
                "(one writer per run)",
                path=self.run_dir,
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe_holder(text: str) -> str:
    """"pid 123 on host since 2026-12-04 18:02:11 UTC" from the lock file (untrusted: any text)."""
    try:
        info = json.loads(text)
        pid, host, since = int(info["pid"]), str(info["host"])[:100], float(info["since"])
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    except (ValueError, TypeError, KeyError, OverflowError, OSError, RecursionError):
        return "another process (it has not said which yet)"
    return f"pid {pid} on {host} since {when}"


def tidy_run_dir(run_dir: str | Path) -> list[Path]:
    """What a killed writer left behind, made right before a (re)start; returns the files removed.

    Temporary checkpoint and config files of an interrupted write are removed (the finished file is the
    old one, whole); a torn last line of events.jsonl is ended, so the next event starts a line of its
    own. Call only while holding the run's `RunLock`.
    """
    run_dir = Path(run_dir)
    removed = [*(run_dir / CHECKPOINT_DIR).glob(".*.tmp"), *run_dir.glob(f"{CONFIG_FILE}.tmp")]
    for path in removed:
        path.unlink(missing_ok=True)
    events = run_dir / EVENTS_FILE
    try:
        with open(events, "rb+") as fh:
            if fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
    except FileNotFoundError:
        pass
    return removed


def find_resume_run(runs_root: str | Path, run: str) -> Path:
    """The folder of `--resume RUN` (a name under runs_root or a path) with a last checkpoint."""
    candidates = [Path(run), Path(runs_root) / run]
    run_dir = next((p for p in candidates if p.is_dir()), None)
    if run_dir is None:
        existing = sorted(p.name for p in Path(runs_root).glob("*") if p.is_dir())[-5:]
        hint = f"; recent runs: {', '.join(existing)}" if existing else ""
        raise LiverctlError(f"--resume: no run '{run}' in {runs_root}{hint}")
    if not checkpoint_path(run_dir, "last").is_file():
        with RunLock(run_dir):  # a run still in its first epoch is refused as busy, not as checkpoint-less
            pass
        raise LiverctlError("--resume: the run has no last checkpoint to continue from (it ended before its first epoch); start a new run", path=run_dir)
    return run_dir


class TimeBudget:
    """Ends a run cleanly before `limit_s`: an epoch is started only if one more (as long as the longest
    so far, with margin) fits, and steps stop when the remaining time nears a checkpoint's cost."""

    def __init__(self, limit_s: float | None, margin: float = 1.15, reserve_s: float = 30.0):
        self.limit_s, self.margin, self.reserve_s = limit_s, margin, reserve_s
        self.start = time.monotonic()
        self.longest_epoch = 0.0
        self.save_s = 0.0

    def remaining(self) -> float:
        return float("inf") if self.limit_s is None else self.limit_s - (time.monotonic() - self.start)

    def epoch_done(self, seconds: float, save_seconds: float) -> None:
        self.longest_epoch = max(self.longest_epoch, seconds)
        self.save_s = max(self.save_s, save_seconds)

    def room_for_epoch(self) -> bool:
        return self.remaining() > self.longest_epoch * self.margin + self.save_s + self.reserve_s

    def room_for_step(self, step_s: float) -> bool:
        reserve = min(self.reserve_s, 0.05 * (self.limit_s or 0)) + self.save_s * 2
        return self.remaining() > 3 * step_s + reserve
