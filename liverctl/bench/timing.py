"""Repeat-and-median timing in turns: every timed figure of `liverctl bench` goes through here.

A shared, noisy machine makes single timings meaningless. The parts being compared are run in turns
(liverctl, baseline, liverctl, baseline, ...), each several times, and each side reports its median; the
ratio of two such medians is what the benchmark reports.
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


def time_interleaved(
    works: dict[str, Callable[[], Any]],
    repeats: int = 3,
    *,
    setups: dict[str, Callable[[], Any]] | None = None,
    warmup: int = 0,
) -> dict[str, Timing]:
    """Time several parts in turns (a b c a b c ...), so a load that comes and goes on a shared machine
    falls on every part alike and the ratios between their medians stay fair.

    `setups[name]()` runs untimed before each run of `works[name]`; `warmup` untimed rounds come first.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    setups = setups or {}
    timings = {name: Timing() for name in works}
    for round_ in range(warmup + repeats):
        for name, work in works.items():
            if name in setups:
                setups[name]()
            start = time.perf_counter()
            result = work()
            if round_ >= warmup:
                timings[name].seconds.append(time.perf_counter() - start)
                timings[name].result = result
    return timings


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """`numerator / denominator`, or None when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
