"""`plural(1, "case")` -> "1 case", `plural(3, "case")` -> "3 cases": one home for a count and its noun in what
liverctl prints, so that no line says "1 test cases"."""

from __future__ import annotations


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`n` and `noun`, or `many` (default: noun + "s") when `n` is not 1."""
    return f"{n} {noun if n == 1 else (many or noun + 's')}"
