"""The `--time-limit` budget of a training run: reading a duration and deciding whether one more epoch or
step fits before the limit."""

from __future__ import annotations

import re
import time

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
    if not s or pos != len(s):
        raise LiverctlError(f"--time-limit: cannot read '{text}' (examples: 11h, 90m, 1h30m, 3600s)")
    if total <= 0:
        raise LiverctlError(f"--time-limit {text}: give a time longer than 0 (examples: 11h, 90m, 1h30m, 3600s)")
    return total


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
