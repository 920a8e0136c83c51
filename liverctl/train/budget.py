"""The `--time-limit` budget of a training run: reading a duration and deciding whether one more epoch or
step fits before the limit."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from liverctl.errors import LiverctlError
from liverctl.printable import quoted

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """"11h", "90m", "1h30m", "45s" -> seconds. A number without its unit is refused: `--time-limit 11`,
    meant as the 11 hours of a Kaggle session, was 11 seconds, a run that stopped before its first step."""
    s = text.strip().replace(" ", "")
    pos, total, unitless = 0, 0.0, None
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2).lower()]
        unitless = unitless or (None if m.group(2) else m.group(1))
        pos = m.end()
    if not s or pos != len(s):
        raise LiverctlError(f"--time-limit: cannot read {quoted(text)} (examples: 11h, 90m, 1h30m, 3600s)")
    if total <= 0:
        raise LiverctlError(f"--time-limit {text}: give a time longer than 0 (examples: 11h, 90m, 1h30m, 3600s)")
    if unitless is not None:
        raise LiverctlError(f"--time-limit {text}: give {unitless} its unit: {unitless}h, {unitless}m or {unitless}s")
    return total


class TimeBudget:
    """Ends a run cleanly before `limit_s`: an epoch is started only if one more (as long as the longest
    so far, with margin) fits, steps stop when the remaining time nears a checkpoint's cost, and a validation
    is abandoned once what is left of it would not finish before then (`validation_watch`): the first one,
    which no earlier epoch has timed, as much as any other.

    `clock`: seconds, monotonic (time.monotonic unless a test injects its own)."""

    def __init__(self, limit_s: float | None, margin: float = 1.15, reserve_s: float = 30.0,
                 clock: Callable[[], float] | None = None):
        self.limit_s, self.margin, self.reserve_s = limit_s, margin, reserve_s
        self.clock = clock or time.monotonic
        self.start = self.clock()
        self.longest_epoch = 0.0
        self.save_s = 0.0

    def remaining(self) -> float:
        return float("inf") if self.limit_s is None else self.limit_s - (self.clock() - self.start)

    def epoch_done(self, seconds: float, save_seconds: float) -> None:
        self.longest_epoch = max(self.longest_epoch, seconds)
        self.save_s = max(self.save_s, save_seconds)

    def room_for_epoch(self) -> bool:
        return self.remaining() > self.longest_epoch * self.margin + self.save_s + self.reserve_s

    def _checkpoint_reserve(self) -> float:
        """What the end of a run needs after its last step or validation: the checkpoints (the longest save
        so far, twice: best and last) and a reserve, at most 5% of the limit (a short limit keeps its time)."""
        return min(self.reserve_s, 0.05 * (self.limit_s or 0)) + self.save_s * 2

    def room_for_step(self, step_s: float) -> bool:
        return self.remaining() > 3 * step_s + self._checkpoint_reserve()

    def validation_watch(self) -> Callable[[int, int], bool]:
        """`keep_going(done, total)`, asked after each of a validation's `total` batches: False once the
        batches left, at the pace of those after the first (which also waits for the loader's workers to
        start), would end too close to the limit to save the checkpoints. After the first batch only a limit
        already at hand stops it: the pace is not known yet. What can overrun the limit is then one batch."""
        if self.limit_s is None:
            return lambda done, total: True
        first_done = 0.0

        def keep_going(done: int, total: int) -> bool:
            nonlocal first_done
            now = self.clock()
            if done == 1:
                first_done = now
            pace = (now - first_done) / (done - 1) if done > 1 else 0.0
            return self.remaining() > (total - done) * pace * self.margin + self._checkpoint_reserve()

        return keep_going
