"""Decisions on the pooled out-of-fold predictions: the threshold and the post-processing with the best
volume Dice over every held-out training case, and the score of every option tried.

The options are a grid: thresholds x post-processing specs (the modes of `liverctl.infer.postprocess`:
none, largest, min-size:N, fill, fill2d and their `+` combinations). An option replaces the current
best only if it raises the volume Dice by more than `min_gain`, and the options are tried in order
(the config's threshold first, `none` first), so ties keep the simplest decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from liverctl.errors import LiverctlError
from liverctl.experiment.oof import threshold_mask
from liverctl.infer.postprocess import parse_postprocess
from liverctl.metrics import DiceCounts
from liverctl.printable import quoted

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_SIZE_FRACTION = 0.1  # min-size:N drops components below this share of the median liver volume


# More voxels than any liver has (3 litres at 0.3 mm voxels are 10^8): a decision's min-size:N above a tenth of it
# is none that `post_candidates` makes (an edited experiment.json's min-size:10^23 emptied every mask).
MAX_LIVER_VOXELS = 10**9


def post_candidates(median_liver_voxels: float) -> list[str]:
    """The post-processing specs tried; min-size:N scales with the data's liver size."""
    n = max(1, int(round(MIN_SIZE_FRACTION * median_liver_voxels)))
    return ["none", "largest", f"min-size:{n}", "fill", "fill2d", "largest+fill", f"min-size:{n}+fill", "largest+fill2d"]


def threshold_candidates(preferred: float, grid: Sequence[float] = THRESHOLDS) -> list[float]:
    """The preferred (config) threshold first, then the grid."""
    out = [float(preferred)]
    out.extend(float(t) for t in grid if abs(float(t) - float(preferred)) > 1e-9)
    return out


def not_a_candidate(threshold: float, post: str, preferred: float | None) -> str | None:
    """Why (threshold, normalised post spec) is no decision `choose_decision` can make from these candidates
    (`threshold_candidates(preferred)`: `preferred` the experiment config's threshold, None where it has none;
    `post_candidates` of a median liver below MAX_LIVER_VOXELS), or None: experiment.json is anyone's file."""
    steps = [step.strip().partition(":") for step in post.split("+")]
    sizes = [int(arg) for name, _, arg in steps if name == "min-size" and arg.isascii() and arg.isdigit()]
    size = sizes[0] if sizes else 1
    if size > MIN_SIZE_FRACTION * MAX_LIVER_VOXELS:
        return (f"out-of-fold decision post {quoted(post, 40)} drops components of fewer than {size} voxels, more than a "
                f"tenth of any liver has (the decision tries min-size:N up to {int(MIN_SIZE_FRACTION * MAX_LIVER_VOXELS):,})")
    if post not in post_candidates(size / MIN_SIZE_FRACTION):
        return (f"out-of-fold decision post {quoted(post, 40)} is none of the post-processing the decision tries: "
                f"{', '.join(post_candidates(1)).replace(':1', ':N')}")
    grid = threshold_candidates(preferred) if preferred is not None else list(THRESHOLDS)
    if not any(abs(threshold - t) < 1e-9 for t in grid):
        tried = ", ".join(f"{t:g}" for t in grid)
        return (f"out-of-fold decision threshold {threshold:g} is none of the thresholds the decision tries: "
                + (f"the config's {tried.replace(', ', ', then ', 1)}" if preferred is not None else tried))
    return None


@dataclass
class Decision:
    threshold: float
    post: str
    volume_dice: float
    slice_dice: float
    global_dice: float
    cases: int
    options: list[dict] = field(default_factory=list)  # {threshold, post, volume_dice, slice_dice, global_dice}

    def to_json(self) -> dict:
        return {
            "threshold": self.threshold, "post": self.post, "volume_dice": self.volume_dice,
            "slice_dice": self.slice_dice, "global_dice": self.global_dice, "cases": self.cases,
            "options": self.options,
        }


def choose_decision(
    cases: Iterable[tuple[str, np.ndarray, np.ndarray]],
    thresholds: Sequence[float],
    posts: Sequence[str],
    min_gain: float = 1e-4,
) -> Decision:
    """Score every (threshold, post) on (case id, quantised probs uint8 (X, Y, Z), label bool (X, Y, Z))
    triples streamed one case at a time; returns the best with every option's figures."""
    parsed = {spec: parse_postprocess(spec) for spec in posts}
    counts = {(t, spec): DiceCounts() for t in thresholds for spec in posts}
    n = 0
    for case_id, q, label in cases:
        n += 1
        for t in thresholds:
            mask = threshold_mask(q, t)
            for spec, post in parsed.items():
                counts[(t, spec)].add_volume(case_id, post(mask), label)
    if n == 0:
        raise LiverctlError("no out-of-fold predictions to decide on")
    options = []
    best = None
    for (t, spec), c in counts.items():
        figures = c.summary()
        options.append({"threshold": t, "post": spec, **figures})
        if best is None or figures["volume_dice"] > best["volume_dice"] + min_gain:
            best = options[-1]
    return Decision(
        threshold=best["threshold"], post=best["post"], volume_dice=best["volume_dice"],
        slice_dice=best["slice_dice"], global_dice=best["global_dice"], cases=n, options=options,
    )


def find_option(options: Sequence[dict], threshold: float, post: str) -> dict | None:
    return next((o for o in options if abs(o["threshold"] - threshold) < 1e-9 and o["post"] == post), None)
