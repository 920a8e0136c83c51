"""Repeat-and-median timing: every timed figure of `liverctl bench` goes through here.

A shared, noisy machine makes single timings meaningless; the median of a few repeats taken in the
same run, and ratios between two such medians, are what the benchmark reports.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timing:
    """Wall seconds of each repeat of one timed part, plus what the last repeat returned."""

    seconds: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def rate(self, items: float) -> float:
        """Items per second at the median repeat (e.g. samples/s for `items` samples per repeat)."""
        return items / self.median if self.median > 0 else float("inf")


def time_repeats(
    work: Callable[[], Any],
    repeats: int = 3,
    *,
    setup: Callable[[], Any] | None = None,
    warmup: int = 0,
) -> Timing:
    """Run `work()` `warmup` times untimed, then `repeats` times timed; `setup()` runs untimed before each.

    Only `work()` is inside the clock (`time.perf_counter`), so clearing an output folder or building a
    fresh iterator can go in `setup`.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    timing = Timing()
    for _ in range(warmup):
        if setup is not None:
            setup()
        work()
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        timing.result = work()
        timing.seconds.append(time.perf_counter() - start)
    return timing


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """`numerator / denominator`, or None when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
