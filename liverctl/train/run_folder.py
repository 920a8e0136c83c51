"""Run folders (`runs/<name>/`), resume look-up and the `--time-limit` budget."""

from __future__ import annotations

import re
import time
from pathlib import Path

from liverctl.checkpoint import checkpoint_path
from liverctl.errors import LiverctlError

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


def new_run_dir(runs_root: str | Path, name: str | None, preset: str) -> Path:
    """A fresh `runs/<name>/`; an existing non-empty folder is refused (use --resume)."""
    name = name or default_run_name(preset)
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
        raise LiverctlError(f"--name '{name}': use letters, digits and . _ + - only")
    run_dir = Path(runs_root) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise LiverctlError(f"run '{name}' already exists; continue it with --resume {name} or pick another --name", path=run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def find_resume_run(runs_root: str | Path, run: str) -> Path:
    """The folder of `--resume RUN` (a name under runs_root or a path) with a last checkpoint."""
    candidates = [Path(run), Path(runs_root) / run]
    run_dir = next((p for p in candidates if p.is_dir()), None)
    if run_dir is None:
        existing = sorted(p.name for p in Path(runs_root).glob("*") if p.is_dir())[-5:]
        hint = f"; recent runs: {', '.join(existing)}" if existing else ""
        raise LiverctlError(f"--resume: no run '{run}' in {runs_root}{hint}")
    if not checkpoint_path(run_dir, "last").is_file():
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
