"""`RunWatcher`: the incremental reading of one run folder for `watch` (file not there yet, a torn last line,
the folder deleted, the file replaced), keeping a `RunState` up to date. Both the TUI and `watch --once` read
only this.

A long log (100k steps, ~15 MB) takes seconds to read and fold. The TUI reads one off its UI thread with
`read_log` (at first, and again when it is replaced or truncated under us), which touches nothing of the watcher: the log's outline first (every event but the plain step
events: the epochs, checkpoints, status and every NaN record, in a fraction of the time), then all of it;
the app hands each to `adopt` on its own thread.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from liverctl.disk import human_bytes
from liverctl.runs.events import EventTail
from liverctl.runs.folder import EVENTS_FILE, rank_failures, writer_alive
from liverctl.watch.state import RunState

# A first read of more than this many bytes is worth doing off the UI thread (`RunWatcher.read_log`).
BACKGROUND_READ_BYTES = 1 << 20
READ_BATCH_LINES = 5000  # `read_log` and `poll` fold this many lines at a time (`read_log` checks `stop()` between)

# `read_log`'s outline leaves out the step events as the trainer writes them (compact JSON: `"kind":"step"`)
# that show no sign of a non-finite value: no NaN or Infinity token, no null (a null loss is a non-finite one),
# no escape (which could spell any of these), no number that could overflow a float (a positive exponent,
# 300 digits in a row). Plain string tests: 100k lines take a tenth of a second, not the seconds of parsing.
_STEP_KIND = '"kind":"step"'
_SIGNS = ("NaN", "Infinity", "null", "\\", "E", "e+")
_POSITIVE_EXPONENT = re.compile(r"e[1-9]")
_LONG_NUMBER = re.compile(r"\d{300}")


def plain_step_line(line: str) -> bool:
    """Whether a log line is a step event that cannot hold a non-finite value (see `_SIGNS`)."""
    if _STEP_KIND not in line or _POSITIVE_EXPONENT.search(line):
        return False
    for sign in _SIGNS:
        if sign in line:
            return False
    return len(line) < 300 or _LONG_NUMBER.search(line) is None


@dataclass
class LogRead:
    """A log read from its start by `RunWatcher.read_log`: its outline (`complete=False`) or all of it."""

    state: RunState
    tail: EventTail  # where the read stopped: the watcher polls on from there once it adopts a complete read
    complete: bool


class RunWatcher:
    """Follows one run folder: polls its events file and keeps a `RunState` up to date.

    `condition` is "waiting" (no events file yet), "ok", or "deleted" (the run folder vanished; the last
    state stays on screen). A file replaced, truncated or rewritten under us (`EventTail.restarted`) starts a fresh state.
    """

    def __init__(self, run_dir: str | os.PathLike, *, clock: Callable[[], float] = time.time):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / EVENTS_FILE
        self.clock = clock
        self.tail = EventTail(self.path)
        self.state = RunState(self.run_dir.name, clock=clock)
        self.condition = "waiting"
        self._seen = False  # an events file was read (or found) at some poll
        # A `read_log` is under way (the app's worker): `poll` must wait for its `adopt`; the notice says so.
        self.reading = False
        self.outline_only = False  # the state holds the outline of the log so far, not its step events

    def poll(self) -> int:
        """Read what was appended since the last poll; returns the number of new events."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None:
            self.condition = "deleted" if self._seen and not self.run_dir.exists() else (
                "missing" if self._seen else "waiting")
            self.tail.poll()
            return 0
        lines = self.tail.poll_lines()
        if self.tail.restarted:  # replaced, truncated or rewritten since the last poll: read from its start
            self.state = RunState(self.run_dir.name, clock=self.clock)
        self._seen = True
        self.condition = "ok"
        self.state.writer_alive = writer_alive(self.run_dir)
        self.state.rank_failed = bool(rank_failures(self.run_dir))
        # In batches, as `read_log` folds them: `watch --once` of a 150k-step log held every event as a dict at once
        # (a peak of 5x what the folded state keeps).
        return sum(self.state.feed_lines(lines[start:start + READ_BATCH_LINES])
                   for start in range(0, len(lines), READ_BATCH_LINES))

    def read_is_long(self) -> bool:
        """The log is to be read from its start (nothing read yet, or replaced, truncated or rewritten since
        the last poll) and holds more than `BACKGROUND_READ_BYTES`: a case for `read_log`."""
        try:
            st = os.stat(self.path)
            return st.st_size > BACKGROUND_READ_BYTES and (not self._seen or self.tail.starts_over())
        except OSError:
            return False

    def start_reading(self) -> None:
        """A `read_log` starts (in the app's worker): `poll` waits for its `adopt`, and a replaced log's old
        state leaves the screen at once, as `poll` would have it."""
        if self._seen:
            self.state = RunState(self.run_dir.name, clock=self.clock)
        self.reading = True

    def read_log(self, stop: Callable[[], bool] = lambda: False) -> Iterator[LogRead]:
        """Read the log from its start into new states, touching nothing of this watcher (a worker thread may
        run it while the UI thread shows the watcher): yields the outline, then the complete read, unless
        `stop()` turns true first. OSError as `poll` raises it."""
        tail = EventTail(self.path)
        lines = tail.poll_lines()
        outline = RunState(self.run_dir.name, clock=self.clock)
        outline.feed_lines(line for line in lines if not plain_step_line(line))
        yield LogRead(outline, tail, complete=False)
        state = RunState(self.run_dir.name, clock=self.clock)
        for start in range(0, len(lines), READ_BATCH_LINES):
            if stop():
                return
            state.feed_lines(lines[start:start + READ_BATCH_LINES])
        yield LogRead(state, tail, complete=True)

    def adopt(self, read: LogRead) -> None:
        """Show what `read_log` read (on the thread that shows this watcher): the outline until the complete
        read comes, then polls go on from where that read stopped."""
        self.state, self.outline_only = read.state, not read.complete
        self.reading = not read.complete
        self.condition = "waiting" if read.tail.missing else "ok"
        self.state.writer_alive = writer_alive(self.run_dir)
        self.state.rank_failed = bool(rank_failures(self.run_dir))
        if read.complete:
            self.tail = read.tail
            self._seen = not read.tail.missing

    @property
    def notice(self) -> str | None:
        """A line for the screen about the file itself, or None when all is well."""
        if self.condition == "waiting":
            return f"waiting for {self.path}"
        if self.condition == "deleted":
            return f"run folder deleted: {self.run_dir} (showing the last state read)"
        if self.condition == "missing":
            return f"events file removed: {self.path} (showing the last state read)"
        if self.reading:
            try:
                size = f" ({human_bytes(os.stat(self.path).st_size)})"
            except OSError:
                size = ""
            return f"reading {self.path}{size}: " + ("the steps and charts follow" if self.outline_only else "…")
        if self.condition == "ok" and self.state.ended_before_first_event:
            return (f"the run ended before its first event: {self.path} is empty and no process is writing it "
                    "(see the train command's own output)")
        return None
