"""Dice figures of DESIGN.md. Always say which one you print.

- volume Dice: Dice of each 3D case, averaged over cases (model selection uses this);
- slice Dice: Dice of each 2D slice, averaged over slices, an empty prediction on an empty slice
  counted as 1 (what the notebooks logged; inflated by empty slices);
- global Dice: true/false positives pooled over every voxel of every case.

Counts are accumulated per slice so that validation can stream slices and never hold a volume of
probabilities: `DiceCounts` collects (tp, fp, fn) per slice per case and derives all three figures.
A case with no liver in either label or prediction has volume Dice 1 (nothing to find, nothing found).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np


def dice_from_counts(tp: float, fp: float, fn: float, empty: float = 1.0) -> float:
    denom = 2.0 * tp + fp + fn
    return empty if denom == 0 else float(2.0 * tp / denom)


# `slice_counts` counts this many voxels of a volume at a time: a whole (X, Y, Z) volume moved slice-first and
# flattened was a transposed copy of each of its two volumes, and three more temporaries of their size (a 512 x 512 x
# 900 case: 0.47 GB more at evaluate's peak, and 1.5-3x the time).
_COUNT_CHUNK = 1 << 22


def slice_counts(pred: np.ndarray, target: np.ndarray, axis: int = -1) -> np.ndarray:
    """Per-slice (tp, fp, fn) of two boolean volumes along `axis`, a few MB of voxels at a time (`_COUNT_CHUNK`).

    Shape: pred, target (X, Y, Z) bool for axis=-1 -> (Z, 3) int64.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != label shape {target.shape}")
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    axis = axis % pred.ndim
    n = pred.shape[axis]
    out = np.zeros((n, 3), dtype=np.int64)
    if pred.size == 0:  # no voxel (a side of length 0): every slice counts nothing, as before the parts
        return out
    if axis == 0:  # (B, H, W) batches: a slice per row, (B, H * W), a view where C-ordered; rows at a time
        flat_p, flat_t = pred.reshape(n, -1), target.reshape(n, -1)
        step = max(1, _COUNT_CHUNK // max(1, flat_p.shape[1]))
        for start in range(0, n, step):
            _add_counts(out[start:start + step], flat_p[start:start + step], flat_t[start:start + step], 1)
    else:  # (X, Y, Z) volumes: views of a part at a time, cut where each array's memory order keeps them cheap
        pred, target = np.moveaxis(pred, axis, -1), np.moveaxis(target, axis, -1)
        rest = tuple(range(pred.ndim - 1))
        if pred.flags.c_contiguous and target.flags.c_contiguous:  # a few rows of X: contiguous blocks
            step = max(1, _COUNT_CHUNK // max(1, pred[0].size))
            for start in range(0, pred.shape[0], step):
                _add_counts(out, pred[start:start + step], target[start:start + step], rest)
        else:  # a NIfTI's mask is Fortran-ordered: a few whole slices, each contiguous there
            step = max(1, _COUNT_CHUNK // max(1, pred[..., 0].size))
            for start in range(0, n, step):
                _add_counts(out[start:start + step], pred[..., start:start + step], target[..., start:start + step], rest)
    return out


def _add_counts(out: np.ndarray, pred: np.ndarray, target: np.ndarray, along: int | tuple[int, ...]) -> None:
    """Add each slice's (tp, fp, fn) over `along` of a part of the volumes into `out` (slices, 3)."""
    tp = np.count_nonzero(pred & target, axis=along)
    out[:, 0] += tp
    out[:, 1] += np.count_nonzero(pred, axis=along) - tp
    out[:, 2] += np.count_nonzero(target, axis=along) - tp


@dataclass
class DiceCounts:
    """Streaming accumulator of per-slice counts, grouped by case."""

    per_case: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))

    def add_slices(self, case: str, counts: np.ndarray) -> None:
        """Add (tp, fp, fn) rows, shape (S, 3), for slices of `case` (any order, any batching)."""
        self.per_case[case].append(np.asarray(counts, dtype=np.int64).reshape(-1, 3))

    def add_volume(self, case: str, pred: np.ndarray, target: np.ndarray) -> None:
        self.add_slices(case, slice_counts(pred, target))

    def merge(self, other: DiceCounts) -> None:
        for case, rows in other.per_case.items():
            self.per_case[case].extend(rows)

    def _case_rows(self) -> dict[str, np.ndarray]:
        return {case: np.concatenate(rows, axis=0) for case, rows in self.per_case.items() if rows}

    def case_dice(self) -> dict[str, float]:
        return {case: dice_from_counts(*rows.sum(axis=0)) for case, rows in self._case_rows().items()}

    def volume_dice(self) -> float:
        per_case = self.case_dice()
        return float(np.mean(list(per_case.values()))) if per_case else float("nan")

    def slice_dice(self) -> float:
        rows = [r for r in self._case_rows().values()]
        if not rows:
            return float("nan")
        allrows = np.concatenate(rows, axis=0)
        return float(np.mean([dice_from_counts(*r) for r in allrows]))

    def global_dice(self) -> float:
        rows = self._case_rows()
        if not rows:
            return float("nan")
        return dice_from_counts(*np.concatenate(list(rows.values()), axis=0).sum(axis=0))

    def summary(self) -> dict[str, float]:
        return {
            "volume_dice": self.volume_dice(),
            "slice_dice": self.slice_dice(),
            "global_dice": self.global_dice(),
        }


def dice_figures(preds: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    """The three figures for whole volumes keyed by case id (slices along the last axis)."""
    counts = DiceCounts()
    for case, pred in preds.items():
        counts.add_volume(case, pred, labels[case])
    return counts.summary()
