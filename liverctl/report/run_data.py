"""A run as `liverctl report` sees it: its summary (`liverctl.runs.summary`), the series its curves draw and its
notable events, folded from its events.jsonl (`RunCurves`), and its config text.

The log is folded line by line, not kept: a 150k-step log's events as dicts were 339 MB of a report's memory,
its step series as numbers are a few MB.
"""

from __future__ import annotations

import math
import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from liverctl.errors import LiverctlError
from liverctl.runs.events import iter_events
from liverctl.runs.folder import CONFIG_FILE, EVENTS_FILE, is_run_dir
from liverctl.runs.history import as_int, last_per, plottable
from liverctl.runs.summary import RunSummary, summarize_run

NOTABLE_KINDS = ("nan", "note", "run_end")
MAX_NOTABLE_EVENTS = 50  # per run; a run that skipped thousands of steps needs the first ones, not all


def plot_value(value) -> float:
    """A plottable number (`liverctl.runs.history.plottable`): None, non-finite or absurd -> NaN (a gap)."""
    number = plottable(value)
    return math.nan if number is None else number


@dataclass
class RunCurves:
    """What the report draws and lists of a run's events, folded one event at a time (`add`).

    Step events as three columns of numbers in log order (`steps` gives the last one written for each step
    number, in step order: `history.last_per`'s rule); epoch_end events (one per epoch, few) kept whole; the
    steps of NaN events; the first MAX_NOTABLE_EVENTS notable events (the NaN guard's actions, notes, a run_end
    with a message) and how many there were.
    """

    step: array = field(default_factory=lambda: array("q"))
    loss: array = field(default_factory=lambda: array("d"))  # plottable, NaN for a gap
    lr: array = field(default_factory=lambda: array("d"))
    epoch_ends: list[dict] = field(default_factory=list)
    nan_steps: list[float] = field(default_factory=list)
    notable: list[dict] = field(default_factory=list)
    notable_count: int = 0

    def add(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "step":
            number = as_int(event.get("step"))
            if number is not None:
                self.step.append(number)
                self.loss.append(plot_value(event.get("loss")))
                self.lr.append(plot_value(event.get("lr")))
            return
        if kind == "epoch_end":
            self.epoch_ends.append(event)
        if kind == "nan" and isinstance(event.get("step"), (int, float)):
            self.nan_steps.append(event["step"])
        if kind in NOTABLE_KINDS and not (kind == "run_end" and not event.get("message")):
            self.notable_count += 1
            if len(self.notable) < MAX_NOTABLE_EVENTS:
                self.notable.append(event)

    def steps(self):
        """(step numbers, loss, lr) as numpy arrays: the last event written for each step number, in step order
        (a resume does the steps since its checkpoint again; the first attempt's belong to weights thrown away)."""
        import numpy as np

        step = np.frombuffer(self.step, dtype=np.int64) if self.step else np.zeros(0, np.int64)
        numbers, from_end = np.unique(step[::-1], return_index=True)  # each number's first from the end
        at = len(step) - 1 - from_end
        loss, lr = (np.frombuffer(a, dtype=np.float64) if a else np.zeros(0) for a in (self.loss, self.lr))
        return numbers, loss[at], lr[at]

    def epochs(self) -> list[dict]:
        """One epoch_end per epoch number, the last written, in epoch order."""
        return last_per(self.epoch_ends, "epoch")


def read_curves(path: Path) -> RunCurves:
    """Fold the log at `path` (its events as `read_events` reads them); a missing or unreadable log is an empty
    one (the summary's problems say which)."""
    curves = RunCurves()
    try:
        for event in iter_events(path):
            curves.add(event)
    except OSError:
        return RunCurves()
    return curves


@dataclass
class RunData:
    """One run as the report sees it: its summary, curves and notable events, config text."""

    path: Path
    summary: RunSummary
    curves: RunCurves
    config_text: str

    @property
    def name(self) -> str:
        return self.summary.name


def load_run(run_dir: str | os.PathLike) -> RunData:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise LiverctlError("not a run folder (no events.jsonl or config.toml)", path=run_dir)
    summary = summarize_run(run_dir)
    try:
        config_text = (run_dir / CONFIG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        config_text = ""
    return RunData(run_dir, summary, read_curves(run_dir / EVENTS_FILE), config_text)
