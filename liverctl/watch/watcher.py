"""`RunWatcher`: the incremental reading of one run folder for `watch` (file not there yet, a torn last line,
the folder deleted, the file replaced), keeping a `RunState` up to date. Both the TUI and `watch --once` read
only this."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from liverctl.runs.events import EventTail
from liverctl.runs.folder import EVENTS_FILE, writer_alive
from liverctl.watch.state import RunState


class RunWatcher:
    """Follows one run folder: polls its events file and keeps a `RunState` up to date.

    `condition` is "waiting" (no events file yet), "ok", or "deleted" (the run folder vanished; the last
    state stays on screen). A file replaced or truncated under us starts a fresh state.
    """

    def __init__(self, run_dir: str | os.PathLike, *, clock: Callable[[], float] = time.time):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / EVENTS_FILE
        self.clock = clock
        self.tail = EventTail(self.path)
        self.state = RunState(self.run_dir.name, clock=clock)
        self.condition = "waiting"
        self._seen: tuple[int, int] | None = None  # (inode, size) after the last poll

    def poll(self) -> int:
        """Read what was appended since the last poll; returns the number of new events."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None:
            self.condition = "deleted" if self._seen is not None and not self.run_dir.exists() else (
                "waiting" if self._seen is None else "missing")
            self.tail.poll()
            return 0
        if self._seen is not None and (st.st_ino != self._seen[0] or st.st_size < self._seen[1]):
            self.state = RunState(self.run_dir.name, clock=self.clock)  # the tail re-reads from the start
        self._seen = (st.st_ino, st.st_size)
        self.condition = "ok"
        self.state.writer_alive = writer_alive(self.run_dir)
        return self.state.feed(self.tail.poll())

    @property
    def notice(self) -> str | None:
        """A line for the screen about the file itself, or None when all is well."""
        if self.condition == "waiting":
            return f"waiting for {self.path}"
        if self.condition == "deleted":
            return f"run folder deleted: {self.run_dir} (showing the last state read)"
        if self.condition == "missing":
            return f"events file removed: {self.path} (showing the last state read)"
        if self.condition == "ok" and self.state.ended_before_first_event:
            return (f"the run ended before its first event: {self.path} is empty and no process is writing it "
                    "(see the train command's own output)")
        return None
