"""The peak of memory traced while a call runs (tracemalloc), for the tests that bound what a reader or a
computation holds: `result, peak = traced_peak(call)`, peak in bytes, tracing stopped however the call ends. A
bound is a multiple of the input's own size, never a timing."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def traced_peak(call: Callable[[], T]) -> tuple[T, int]:
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
