"""`plural(1, "case")` -> "1 case", `plural(3, "case")` -> "3 cases": one home for a count and its noun in what
liverctl prints, so that no line says "1 test cases"; `agree(n, "is", "are")` gives the verb (or a bare noun)
that goes with such a count, so that none says "1 case are missing" either."""

from __future__ import annotations


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`n` and `noun`, or `many` (default: noun + "s") when `n` is not 1."""
    return f"{n} {noun if n == 1 else (many or noun + 's')}"


def agree(n: int, one: str, many: str) -> str:
    """`one` when `n` is 1, else `many`: the word that agrees with a count of `n` said elsewhere in the line,
    a verb (`agree(n, "is", "are")`) or a noun without its number (`agree(n, "fold", "folds")`)."""
    return one if n == 1 else many
