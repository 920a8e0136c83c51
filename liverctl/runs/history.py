"""The run history: the one reducer of a run's `events.jsonl`, shared by `runs`, `watch` and `report`.

`RunHistory.add(event)` folds one event; `read_history(path, problems)` folds a whole log in one pass
(`step` events, the bulk of a log, are skipped without being parsed: only the time stamp of the last one
before another event counts). `watch` keeps a `RunHistory` inside its live state and adds only what a
live view needs (smoothing, the latest step, the stall hint).

The rules, one each, that every reader of a run shares:
- best epoch (`RunHistory.best`): the last `epoch_end` with `is_best` true and a finite volume Dice, that
  is the epoch `checkpoints/best.pt` holds (the trainer writes best.pt exactly when it writes is_best);
  a log whose epoch_end events carry no `is_best` at all (written by hand or an older trainer): the
  first highest finite volume Dice.
- status (`run_status`): the `run_end` status of the last segment (after the last `run_start`); without
  one, "running" while a live process holds the run's `.lock` (`liverctl.runs.folder.writer_alive`),
  when nobody does "failed" if a torchrun rank left its failure in the folder (rank 0 then killed by
  torchrun before its run_end: `liverctl.runs.folder.rank_failures`), else "interrupted" (killed,
  crashed), "unknown" with no event at all.
- why a run ended (`end_message`): the `run_end` message of a last segment that did not complete, as one
  printable line of at most MESSAGE_LIMIT characters (`one_line`: the log is anyone's file).

Standard library only: the TUI imports this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.printable import one_line
from liverctl.runs.events import SCHEMA_VERSION, LineReader, parse_line, read_lines, unreadable_note


def finite(value: Any) -> float | None:
    """A finite float, or None (null, NaN, inf, bool, text, an integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value) if math.isfinite(value) else None
    except OverflowError:
        return None


def dice(value: Any) -> float | None:
    """A Dice figure: a finite number in [0, 1], or None (a log or scores file edited or damaged: Dice 7 or
    1e308 is no figure, and would otherwise be a run's best epoch or best submission)."""
    number = finite(value)
    return number if number is not None and 0.0 <= number <= 1.0 else None


# A run's figures (losses, Dice, rates, seconds) never come near this; beyond it a value in someone's log is
# absurd, and chart libraries overflow scaling it (plotext raises, matplotlib warns and squashes the curve).
PLOTTABLE = 1e100


def plottable(value: Any) -> float | None:
    """A finite float within +-PLOTTABLE (what `watch` and `report` draw), or None (left off the chart)."""
    number = finite(value)
    return number if number is not None and abs(number) <= PLOTTABLE else None


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def event_ts(event: dict | None) -> float | None:
    return finite(event.get("ts")) if event else None


@dataclass
class RunHistory:
    """What an event log says about its run, folded event by event (`add`)."""

    exists: bool = False  # a log file was found (read_history) or any event was added
    run_start: dict | None = None  # the first run_start
    latest_start: dict | None = None  # the run_start of the last segment (a resume starts a segment)
    epoch_ends: list[dict] = field(default_factory=list)  # in log order, rewritten epochs included
    run_end: dict | None = None  # the run_end of the last segment only
    nan_events: int = 0
    n_events: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    versions: set = field(default_factory=set)
    mtime: float | None = None
    torn_last_line: bool = False
    _segment_start: float | None = None
    _wall_before: float = 0.0  # wall time of the segments before the last one

    def add(self, event: dict) -> None:
        self.exists = True
        self.n_events += 1
        version = event.get("v")  # anyone's value: a list or a table is no version, and cannot be in a set
        self.versions.add(version if version is None or isinstance(version, (int, float, str)) else
                          f"a {type(version).__name__}")
        ts = event_ts(event)
        kind = event.get("kind")
        if kind == "run_start":
            if self._segment_start is not None and self.last_ts is not None:
                self._wall_before += max(0.0, self.last_ts - self._segment_start)
            self._segment_start = ts
            self.run_start = self.run_start or event
            self.latest_start = event
            self.run_end = None
        elif kind == "epoch_end":
            self.epoch_ends.append(event)
        elif kind == "nan":
            self.nan_events += 1
        elif kind == "run_end":
            self.run_end = event
        self.saw_ts(ts)

    def saw_ts(self, ts: float | None) -> None:
        if ts is not None:
            self.first_ts = ts if self.first_ts is None else self.first_ts
            self.last_ts = ts

    @property
    def wall_seconds(self) -> float | None:
        """Seconds the run was writing, summed over its segments (gaps between a kill and a resume left out)."""
        return self.wall_seconds_at(None)

    def wall_seconds_at(self, now: float | None) -> float | None:
        """`wall_seconds` with the last segment running on to `now` (a live view of a running run);
        None: to the last event, as `wall_seconds`."""
        start = self._segment_start if self._segment_start is not None else self.first_ts
        stop = now if now is not None else self.last_ts
        if start is None or stop is None:
            return None
        return self._wall_before + max(0.0, stop - start)

    @property
    def segment_start(self) -> float | None:
        """When the last segment began (the time stamp of the last `run_start`), or None."""
        return self._segment_start

    @property
    def epochs_done(self) -> int:
        return len({e.get("epoch") for e in self.epoch_ends})

    @property
    def epochs_planned(self) -> int | None:
        planned = [e.get("epochs") for e in self.epoch_ends if as_int(e.get("epochs"))]
        return planned[-1] if planned else None

    @property
    def best(self) -> dict | None:
        """The `epoch_end` event of the best epoch (the module docstring's rule), or None."""
        with_dice = [e for e in self.epoch_ends if dice(e.get("volume_dice")) is not None]
        if any("is_best" in e for e in self.epoch_ends):
            marked = [e for e in with_dice if e.get("is_best") is True]
            return marked[-1] if marked else None
        best = None
        for e in with_dice:
            if best is None or dice(e["volume_dice"]) > dice(best["volume_dice"]):
                best = e
        return best

    def status(self, writer_alive: bool | None, rank_failed: bool = False) -> str:
        return run_status(self, writer_alive, rank_failed)


def run_status(history: RunHistory, writer_alive: bool | None, rank_failed: bool = False) -> str:
    """The run's status (the module docstring's rule). `writer_alive` None: not known (events fed
    without their folder): a log without run_end then reads as running. `rank_failed`: the folder holds a
    failure a torchrun rank left (`liverctl.runs.folder.rank_failures`)."""
    if history.run_end is not None:
        status = history.run_end.get("status")  # anyone's text: a table or a list is no status
        return status if isinstance(status, str) and status.strip() else "unknown"
    if writer_alive or (writer_alive is None and history.n_events):
        return "running"
    if not history.n_events:
        return "unknown"
    return "failed" if rank_failed else "interrupted"


def end_message(history: RunHistory) -> str | None:
    """Why the run ended, for a run whose last segment has a `run_end` with another status than completed:
    its message as `one_line` ("" when it gives none). None without run_end (running, interrupted: the
    status says that much) or for a completed run."""
    end = history.run_end
    if end is None or end.get("status") == "completed":
        return None
    return one_line(end.get("message"))


def last_per(events: list[dict], key: str) -> list[dict]:
    """One event per `key` number ("epoch", "step"), in that number's order: the last one written for it.
    A run killed between checkpoints resumes from the last one and does its epochs and steps since then
    again; the first attempt's figures belong to weights that were thrown away (`watch`'s table keeps the
    last one too). Events without an integer `key` are left out."""
    latest: dict[int, dict] = {}
    for event in events:
        number = as_int(event.get(key))
        if number is not None:
            latest[number] = event
    return [latest[k] for k in sorted(latest)]


def best_figures(history: RunHistory) -> tuple[int | None, dict[str, float | None]]:
    """(best epoch, {volume_dice, slice_dice, global_dice}) of the best epoch; (None, {}) without one."""
    best = history.best
    if best is None:
        return None, {}
    return as_int(best.get("epoch")), {k: dice(best.get(k)) for k in ("volume_dice", "slice_dice", "global_dice")}


def _is_step_line(line: str) -> bool:
    return '"kind":"step"' in line or '"kind": "step"' in line


def read_history(path: Path, problems: list[str]) -> RunHistory:
    """Fold the log at `path`; whatever is missing or odd becomes a line in `problems`, never an error."""
    history = RunHistory()
    reader = LineReader()  # a line over MAX_LINE_BYTES is skipped unread: an unreadable line
    try:
        with open(path, "rb") as fh:
            n_lines, bad = _fold_lines(history, read_lines(fh, reader))
        history.mtime = path.stat().st_mtime
    except FileNotFoundError:
        problems.append("no events.jsonl")
        return RunHistory()
    except OSError as exc:
        problems.append(f"events.jsonl unreadable ({exc.strerror})")
        return RunHistory()
    history.exists = True
    _check_log(history, n_lines, reader.pending, bad, problems)  # pending: a line still being written, or ""
    return history


def _fold_lines(history: RunHistory, lines: Iterable[str]) -> tuple[int, int]:
    """Fold complete lines; returns how many there were and how many of them were unreadable."""
    n_lines = bad = 0
    pending_step: str | None = None  # the latest step line since the last other event, unparsed
    for line in lines:
        n_lines += 1
        if _is_step_line(line):
            pending_step = line
            continue
        event = parse_line(line)
        if event is None:
            bad += line.strip() != ""
            continue
        if pending_step is not None:
            history.saw_ts(event_ts(parse_line(pending_step)))
            pending_step = None
        history.add(event)
    if pending_step is not None:
        history.saw_ts(event_ts(parse_line(pending_step)))
    return n_lines, bad


def _check_log(history: RunHistory, n_lines: int, tail: str, bad: int, problems: list[str]) -> None:
    if tail.strip():
        history.torn_last_line = parse_line(tail) is None
        if not history.torn_last_line:  # a complete last line that just lacks its newline
            problems.append("events.jsonl: last line has no newline")
    if bad:
        problems.append(unreadable_note(bad))
    if history.run_start is None and (n_lines or tail):
        problems.append("events.jsonl: no run_start event (log truncated at the start?)")
    elif not n_lines and not tail:
        problems.append("events.jsonl is empty")


def schema_version(history: RunHistory, problems: list[str]) -> int | None:
    """The log's schema version; a problem for event lines of another version (the oldest numeric one is returned)."""
    versions = set(history.versions) - {SCHEMA_VERSION}
    if not versions:
        return SCHEMA_VERSION if history.exists else None
    numeric = sorted(v for v in versions if isinstance(v, int) and not isinstance(v, bool))
    if None in versions:
        problems.append("events without a schema version `v` (written by an older liverctl?); read as best we can")
    for v in numeric:
        if v < SCHEMA_VERSION:
            problems.append(f"events schema v{v} is older than v{SCHEMA_VERSION}; read as best we can")
        else:
            problems.append(f"events schema v{v} is newer than this liverctl understands (v{SCHEMA_VERSION}); "
                            "update liverctl")
    others = versions - set(numeric) - {None}
    if others:
        problems.append(f"events with an unknown schema version {sorted(map(str, others))}")
    return numeric[0] if numeric else None
