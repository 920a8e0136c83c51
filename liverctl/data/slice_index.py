"""The store's slice index: one row per slice of every complete case (columns `schema.INDEX_COLUMNS`),
built from the case attributes, compared with what the store holds, and swapped in whole."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.data.schema import (
    INDEX_COLUMNS,
    INDEX_GROUP,
    SPLIT_CODES,
    TEST,
    TEST_FOLD,
    create_index_array,
    read_attrs,
    read_metadata,
)


def _case_columns(code: int, attrs: dict[str, Any]) -> dict[str, np.ndarray]:
    depth = int(attrs["shape"][2])
    z = np.arange(depth, dtype=np.int32)
    fold = TEST_FOLD if attrs["split"] == TEST or attrs.get("fold") is None else int(attrs["fold"])
    return {
        "case": np.full(depth, code),
        "z": z,
        "neighbors": np.stack([np.maximum(z - 1, 0), z, np.minimum(z + 1, depth - 1)], axis=1),
        "liver_pixels": np.asarray(attrs.get("liver_pixels_per_slice") or [0] * depth),
        "split": np.full(depth, SPLIT_CODES[attrs["split"]]),
        "fold": np.full(depth, fold),
    }


def index_columns(cases: dict[str, dict[str, Any]]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The index's columns and attributes for the complete cases `cases` (case id -> attributes)."""
    ids = sorted(cases)
    parts = [_case_columns(code, cases[case_id]) for code, case_id in enumerate(ids)]
    arrays = {}
    for name, dtype in INDEX_COLUMNS.items():
        if parts:
            arrays[name] = np.concatenate([p[name] for p in parts]).astype(dtype)
        else:
            arrays[name] = np.zeros((0, 3) if name == "neighbors" else (0,), dtype=dtype)
    slices = [int(cases[c]["shape"][2]) for c in ids]
    attrs = {
        "cases": ids,
        "splits": [cases[c]["split"] for c in ids],
        "folds": [TEST_FOLD if cases[c].get("fold") is None else int(cases[c]["fold"]) for c in ids],
        "slices": slices,
        "offsets": [int(n) for n in np.cumsum([0, *slices[:-1]])] if ids else [],
        "sources": [cases[c].get("source_name") or "main" for c in ids],
    }
    return arrays, attrs


def index_matches(store: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> bool:
    """Whether the store's index holds exactly these columns and attributes."""
    import zarr

    if read_metadata(store / INDEX_GROUP) is None or read_attrs(store / INDEX_GROUP) != attrs:
        return False
    try:
        group = zarr.open_group(str(store / INDEX_GROUP), mode="r")
        return all(np.array_equal(group[name][:], values) for name, values in arrays.items())
    except Exception:  # a damaged index is simply rebuilt
        return False


def retire_index(store: Path, work: Path) -> None:
    """Move the store's index into `work` before a case in the store changes under it (an ingest run calls
    this before its first commit). A run that dies before `write_index` then leaves a store without an
    index, which `LiverStore.open` refuses until ingest runs again, not one whose index still describes
    the cases as they were (other slice counts, other liver pixels)."""
    target = store / INDEX_GROUP
    if target.exists():
        os.rename(target, work / "retired-index")


def write_index(store: Path, work: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Build the index in `work` and swap it into the store (renames on one file system)."""
    import zarr

    built = work / INDEX_GROUP
    group = zarr.open_group(str(built), mode="w")
    for name, values in arrays.items():
        create_index_array(group, name, values)
    group.attrs.update(attrs)
    target = store / INDEX_GROUP
    if target.exists():
        old = work / "replaced-index"
        os.rename(target, old)
        os.rename(built, target)
        shutil.rmtree(old)
    else:
        os.rename(built, target)
