"""`did you mean 'x'?`: one home for the names nearest a mistyped one (config keys, presets, architectures,
encoders, TTA modes, post-processing steps, `runs` columns, run names), so that every such hint is found,
ordered and quoted alike. Stdlib only: `runs.folder`, which `watch` imports, uses it.

The nearness is difflib's similarity ratio, as `difflib.get_close_matches` measures it, but names equally
near keep the order they are given in, where get_close_matches breaks ties by name, Z to A ('flip' got
'vflip' rather than 'hflip'): callers list the most used names first.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from liverctl.printable import quoted

CUTOFF = 0.6  # difflib's default: below it a name is no nearer than any other


def nearest(word: str, candidates: Iterable[str], n: int = 1, cutoff: float = CUTOFF, *,
            ties_only: bool = False) -> list[str]:
    """Up to `n` of `candidates` at least `cutoff` near `word`, the nearest first, names equally near in the
    order given. `ties_only`: only those as near as the nearest ('flip' -> 'hflip', 'flips': not also 'vflip'
    when n is 2, and not a farther second name beside a clear first)."""
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(str(word))
    scored: list[tuple[float, int, str]] = []
    for index, name in enumerate(dict.fromkeys(map(str, candidates))):
        matcher.set_seq1(name)
        if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff:  # cheap bounds first
            score = matcher.ratio()
            if score >= cutoff:
                scored.append((-score, index, name))
    scored.sort()
    if ties_only and scored:
        scored = [entry for entry in scored if entry[0] == scored[0][0]]
    return [name for _, _, name in scored[:n]]


def did_you_mean(word: str, candidates: Iterable[str], n: int = 1, cutoff: float = CUTOFF, *,
                 ties_only: bool = False) -> str:
    """"did you mean 'x'?" or "did you mean 'x' or 'y'?" (`nearest`), "" where no name is near."""
    return hint_for(nearest(word, candidates, n, cutoff, ties_only=ties_only))


def hint_for(names: Iterable[str]) -> str:
    """"did you mean 'x'?" or "did you mean 'x' or 'y'?" for names already found (a caller that maps what
    `nearest` found: a timm name's `tu-`, an architecture's spelling), "" for none."""
    names = list(names)
    return f"did you mean {' or '.join(map(quoted, names))}?" if names else ""
