"""Source voxels -> what the store holds, slab by slab in one pass: the float16 image with its exact
intensity statistics (`Float16Converter`), and the uint8 liver mask with its liver pixels per slice
(`LiverMaskConverter`). Slabs come in NIfTI order (X, Y, n) and leave as (n, X, Y) C-contiguous slices,
one chunk each.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.data.liver_mask import liver_from_labels

FLOAT16_MAX = 65504.0
PERCENTILES = (0.5, 1, 5, 50, 95, 99, 99.5)
Z_BLOCK = 16  # slices converted / written at a time (bounds the extra memory per worker)


def _lookup_dtype(dtype: np.dtype) -> np.dtype | None:
    """The unsigned type whose every value indexes a lookup table, for integer sources of 8 or 16 bits."""
    dtype = np.dtype(dtype)
    return np.dtype(f"u{dtype.itemsize}") if dtype.kind in "iu" and dtype.itemsize <= 2 else None


def _every_value(dtype: np.dtype) -> np.ndarray:
    """Every value of an 8- or 16-bit integer dtype, in the order of its unsigned bit patterns."""
    raw = _lookup_dtype(dtype)
    return np.arange(1 << (8 * raw.itemsize), dtype=np.int64).astype(raw).view(dtype)


def _slices_first(slab: np.ndarray) -> np.ndarray:
    """Shape: (X, Y, n) -> (n, X, Y) C-contiguous (the one copy a slab needs)."""
    return np.ascontiguousarray(slab.transpose(2, 0, 1))


class Float16Histogram:
    """Counts of each of the 65,536 float16 bit patterns, added block by block while a volume is converted
    (`Float16Converter`); `stats()` gives exact min, max, mean, std and percentiles (numpy's linear
    method) from them, with no sort and no second pass over the voxels."""

    def __init__(self) -> None:
        self.counts = np.zeros(1 << 16, dtype=np.int64)

    def add(self, values16: np.ndarray) -> None:
        # NIfTI arrays come in Fortran order, where a slab of slices is contiguous: no copy.
        self.counts += np.bincount(values16.view(np.uint16).ravel(order="K"), minlength=1 << 16)

    def stats(self) -> dict[str, float]:
        counts = self.counts
        present = np.flatnonzero(counts)
        values = present.astype(np.uint16).view(np.float16).astype(np.float64)
        order = np.argsort(values, kind="stable")
        values, weights = values[order], counts[present][order]
        n = int(weights.sum())
        cumulative = np.cumsum(weights)

        def at_rank(rank: int) -> float:  # value of the rank-th smallest voxel (0-based)
            return float(values[np.searchsorted(cumulative, rank, side="right")])

        mean = float((values * weights).sum() / n)
        stats = {
            "min": float(values[0]),
            "max": float(values[-1]),
            "mean": mean,
            "std": float(np.sqrt(((values - mean) ** 2 * weights).sum() / n)),
        }
        for q in PERCENTILES:
            pos = q / 100.0 * (n - 1)
            lo = int(np.floor(pos))
            low, high = at_rank(lo), at_rank(min(lo + 1, n - 1))
            stats[f"p{q:g}"] = low + (pos - lo) * (high - low)
        return stats


def float16_stats(volume16: np.ndarray) -> dict[str, float]:
    """Exact min, max, mean, std and percentiles of a float16 volume (`Float16Histogram`)."""
    hist = Float16Histogram()
    for z0 in range(0, volume16.shape[-1], Z_BLOCK):
        hist.add(volume16[..., z0 : z0 + Z_BLOCK])
    return hist.stats()


class Float16Converter:
    """Source voxels -> float16, slab by slab, counting the float16 values on the way (`hist`).

    Integer sources of 8 or 16 bits (most CT) convert through a table of every possible value: one
    gather instead of numpy's scalar float16 rounding, and the histogram is a bincount of the raw values
    mapped through the same table. Other sources use `astype`. Both give `data.astype(np.float16)` exactly.
    """

    def __init__(self, dtype: np.dtype):
        self.hist = Float16Histogram()
        self.raw = _lookup_dtype(dtype)
        self.table = None
        if self.raw is not None:
            with np.errstate(over="ignore"):  # uint16 above 65504: inf, but ingest refuses those first
                self.table = _every_value(dtype).astype(np.float16)
            self.table_bits = self.table.view(np.uint16)

    def convert(self, slab: np.ndarray) -> np.ndarray:
        """Shape: slab (X, Y, n) -> float16 (n, X, Y), C-contiguous (one chunk per slice)."""
        if self.table is None:
            out = _slices_first(slab).astype(np.float16)
            self.hist.add(out)
            return out
        raw = slab.view(self.raw)
        out = np.empty((raw.shape[2], raw.shape[0], raw.shape[1]), dtype=np.float16)
        counts = np.zeros(self.table.size, dtype=np.int64)
        # slice by slice: bincount's intp copy of the values and take's strided reads stay in cache
        # (512 x 512 x 16 at once: 62 ms a 64-slice case, slice by slice 45 ms)
        for k in range(raw.shape[2]):
            values = raw[:, :, k]  # contiguous in a NIfTI array's Fortran order
            counts += np.bincount(values.ravel(order="K"), minlength=self.table.size)
            np.take(self.table, values, out=out[k])
        self.hist.counts += np.bincount(self.table_bits, weights=counts, minlength=1 << 16).astype(np.int64)
        return out


def label_values(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of a label volume and how many voxels hold each (sorted by value).

    Integer labels spanning a few values (0/1, LiTS's 0/1/2): one comparison pass per value; other
    integer labels of 8 or 16 bits: a bincount of the raw values; the rest (float labels): `np.unique`.
    """
    raw = _lookup_dtype(label.dtype)
    if raw is None:
        return np.unique(label, return_counts=True)
    low, high = int(label.min()), int(label.max())
    if high - low < 8:
        values = np.arange(low, high + 1)
        counts = np.array([np.count_nonzero(label == v) for v in values], dtype=np.int64)
    else:  # bincount casts to intp: 8 bytes a voxel of temporary memory, so only for many values
        counts = np.bincount(label.view(raw).ravel(order="K"), minlength=1 << (8 * raw.itemsize))
        values = _every_value(label.dtype)
    present = np.flatnonzero(counts)
    values, counts = values[present], counts[present]
    order = np.argsort(values, kind="stable")
    return values[order].astype(label.dtype), counts[order]


class LiverMaskConverter:
    """Label voxels (whole numbers: `liverctl.data.liver_mask.integer_labels`) -> uint8 liver mask
    (`liverctl.data.liver_mask.liver_from_labels`: 1 where the value is in `liver_labels`; None: any value > 0),
    slab by slab, counting the liver pixels of each slice on the way (`per_slice`).
    """

    def __init__(self, liver_labels: Sequence[int] | None):
        self.liver_labels = None if liver_labels is None else [int(v) for v in liver_labels]
        self.per_slice: list[int] = []

    def convert(self, slab: np.ndarray) -> np.ndarray:
        """Shape: slab (X, Y, n) -> uint8 (n, X, Y), C-contiguous (one chunk per slice)."""
        liver = liver_from_labels(_slices_first(slab), self.liver_labels)
        self.per_slice.extend(int(n) for n in np.count_nonzero(liver.reshape(liver.shape[0], -1), axis=1))
        return liver.view(np.uint8)


NARROW_HU = 20.0  # a CT in HU spans hundreds between its 1st and 99th percentile (fat -100, soft tissue 40..60)
DENSE_HU = 900.0  # in HU only dense bone reads above this; 5% of the voxels above it: soft tissue read 1024 high


def intensity_note(stats: Any, path: Path, scaling: Any = None) -> str | None:
    """Say so when a volume's statistics (`Float16Histogram.stats`, as a case records them) do not look like CT in Hounsfield units,
    which training's default window (data.normalize = "window") takes them for: near-constant or already
    normalised values, nothing below 0 (a lost rescale intercept, an MRI), or the bulk of the voxels 1024 too
    high. None for real CT, cropped ones too, down to a box around the liver (tests/data/test_ingest.py, on the
    real samples): the percentiles ignore the odd voxel. `scaling`: the header's [slope, intercept]."""
    try:
        lo, hi, p1, p95, p99 = (float(stats[k]) for k in ("min", "max", "p1", "p95", "p99"))
    except (TypeError, KeyError, ValueError):  # a store written before the stats had these: nothing to say
        return None
    slope = scaling[0] if isinstance(scaling, (list, tuple)) and len(scaling) == 2 else 1.0
    scaled = isinstance(slope, (int, float)) and slope != 1
    by_header = f" or scaled down by its header's scl_slope ({slope:g})" if scaled else ""
    lo_, hi_, p1_, p95_, p99_ = (f"{round(v, 3):g}" for v in (lo, hi, p1, p95, p99))  # 4095, 0.871, -1.52
    seen = f"values {lo_}..{hi_}, {p1_}..{p99_} between the 1st and 99th percentile"
    window = "Training's window (data.normalize = \"window\") clips it"
    minmax = "or, if it is not CT in HU, train with data.normalize = \"minmax\""
    if hi == lo:
        why = f"scaled away by its header's scl_slope ({slope:g})" if scaled else "a blank or damaged volume"
        return (f"{path}: every voxel is {lo_}: nothing to learn from under any data.normalize; {why}? Convert "
                "the CT again and ingest it again, or leave it out")
    if p99 - p1 < NARROW_HU:
        return (f"{path}: {seen}: not Hounsfield units, where fat (-100) and soft tissue (40..60) alone span over "
                f"100; an image already normalised (to [0, 1], [-1, 1] or z-scores){by_header}? {window} to one "
                f"grey: ingest the CT in HU, {minmax}")
    # nothing below 0 yet 1% near it (air at 0, an MRI's background): a CT in HU has some negative voxel (air,
    # fat, noise); a crop inside soft tissue (all 40..200 HU, none near 0) is let be
    if (lo >= 0 and p1 < NARROW_HU) or p95 > DENSE_HU:
        below = "none below 0" if lo >= 0 else f"5% at {p95_} or above"
        if p95 <= DENSE_HU:
            guess = "an MRI or another image not in HU? A CT in HU has air at -1000, fat at -100"
        else:  # an MRI brighter than 900 with its background at 0 reads the same as a CT 1024 high
            guess = (f"a CT whose rescale intercept (-1024) was lost{', or an MRI' if lo >= 0 else ''}? Air should "
                     "read about -1000 HU, liver about 60")
        return (f"{path}: {seen}, {below}: {guess}. {window}: ingest it again in HU (a lost intercept: set "
                f"scl_inter = -1024 in its header), {minmax}")
    return None
