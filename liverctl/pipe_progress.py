"""Progress off a terminal (a notebook cell's `!liverctl submit`, a log file, a pipe), where a live bar cannot
move: its line is written now and then instead, at most every `EVERY_SECONDS`, so that minutes of work are not
minutes of silence (a 512 x 512 x 900 case predicted by two runs: 3 minutes without a line), while a command that
ends sooner writes no such line. Used by the commands' bars (`commands._common.progress_bar`: also the out-of-fold
prediction of `train --folds`) and the trainer's (`train.progress.ConsoleProgress`: its steps and its validation).
stdlib only."""

from __future__ import annotations

import time
from collections.abc import Callable

EVERY_SECONDS = 60.0


class PipeProgress:
    """`tick()` after each piece of work: calls `write` once `EVERY_SECONDS` (as it was when this was made) have
    passed since this was made or last wrote."""

    def __init__(self, write: Callable[[], None]):
        self.write = write
        self.every = EVERY_SECONDS
        self.due = time.monotonic() + self.every

    def restart(self) -> None:
        """A new stage: its first line `EVERY_SECONDS` into it, not at once because the one before ran long."""
        self.due = time.monotonic() + self.every

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self.due:
            self.due = now + self.every
            self.write()
