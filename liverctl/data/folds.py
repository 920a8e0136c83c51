"""Patient-level folds and source names of the cases in a store.

A fresh case takes its source name, and a train-only fold when its source is not in the folds
(`case_source_attrs`); after every ingest run, `set_sources_and_folds` deals the training cases of the
sources in the folds (`assign_folds`), keeping the folds they have when the fold count and seed are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from liverctl.data.schema import CASES_GROUP, TRAIN, TRAIN_ONLY_FOLD, update_attrs
from liverctl.data.sources.plan import SourcePlan


def assign_folds(
    liver_voxels: dict[str, int], n_folds: int, seed: int, fixed: dict[str, int] | None = None
) -> dict[str, int]:
    """Patient-level folds balanced by liver volume: cases sorted by liver voxels are dealt out in
    groups of `n_folds`, each group in a seeded random fold order. Depends only on the cases, not on
    the order they were ingested in.

    `fixed`: cases that keep the fold they have. When those folds are what the deal above gives, the
    other cases get theirs from it too (a store finished after an interrupted run equals one made in a
    single run); otherwise the new cases are dealt the same way onto the folds with fewest cases.
    """
    full = _deal(sorted(liver_voxels, key=lambda c: (liver_voxels[c], c)), n_folds, seed, [0] * n_folds)
    fixed = {c: f for c, f in (fixed or {}).items() if c in liver_voxels}
    if all(full[c] == f for c, f in fixed.items()):
        return full
    counts = [0] * n_folds
    for fold in fixed.values():
        counts[fold] += 1
    new = sorted((c for c in liver_voxels if c not in fixed), key=lambda c: (liver_voxels[c], c))
    return {**fixed, **_deal(new, n_folds, seed, counts)}


def _deal(ordered: list[str], n_folds: int, seed: int, counts: list[int]) -> dict[str, int]:
    """Deal `ordered` in groups of `n_folds`; each group goes to the folds ordered by (cases so far,
    position in a seeded random permutation) - with equal counts, the permutation itself."""
    rng = np.random.default_rng(seed)
    counts = list(counts)
    folds: dict[str, int] = {}
    for start in range(0, len(ordered), n_folds):
        rank = {int(f): i for i, f in enumerate(rng.permutation(n_folds))}
        order = sorted(range(n_folds), key=lambda f: (counts[f], rank[f]))
        for case_id, fold in zip(ordered[start : start + n_folds], order, strict=False):
            folds[case_id] = fold
            counts[fold] += 1
    return folds


def case_source_attrs(source: SourcePlan, old: dict[str, Any] | None) -> dict[str, Any]:
    """The attributes a freshly built case gets from its source before it enters the store: its source
    name and, for a train-only case, `TRAIN_ONLY_FOLD`; a case re-ingested keeps its fold."""
    if not source.in_folds:
        return {"source_name": source.name, "fold": TRAIN_ONLY_FOLD}
    fold = (old or {}).get("fold")
    keep = isinstance(fold, int) and fold >= 0 and (old or {}).get("split") == TRAIN
    return {"source_name": source.name, "fold": fold if keep else None}


def set_sources_and_folds(
    store: Path,
    cases: dict[str, dict[str, Any]],
    records: dict[str, dict[str, Any]],
    *,
    main: str | None,
    n_folds: int,
    fold_seed: int,
    same_folds: bool,
) -> bool:
    """Give every case its source name and fold (in `cases` too); True if any attribute changed.

    Cases from before sources existed belong to the main source. Training cases of a source in the
    folds keep their fold if the fold count and seed are unchanged (`same_folds`); the others are dealt
    (`assign_folds`). Training cases of the other sources, and of unknown ones, are train-only.
    """
    updates: dict[str, dict[str, Any]] = {}
    voxels, fixed = {}, {}
    for case_id, attrs in cases.items():
        source = attrs.get("source_name") or main
        if source is not None and attrs.get("source_name") != source:
            updates.setdefault(case_id, {})["source_name"] = source
        if attrs["split"] != TRAIN:
            continue
        if not records.get(source or "", {}).get("in_folds", False):
            updates.setdefault(case_id, {})["fold"] = TRAIN_ONLY_FOLD
            continue
        voxels[case_id] = int(attrs.get("liver_voxels") or 0)
        fold = attrs.get("fold")
        if same_folds and isinstance(fold, int) and 0 <= fold < n_folds:
            fixed[case_id] = fold
    for case_id, fold in assign_folds(voxels, n_folds, fold_seed, fixed).items():
        updates.setdefault(case_id, {})["fold"] = fold
    changed = False
    for case_id, values in updates.items():
        values = {k: v for k, v in values.items() if k not in cases[case_id] or cases[case_id][k] != v}
        if values and update_attrs(store / CASES_GROUP / case_id, values):  # `cases` is the store's: unchanged
            changed = True  # values need no read of the case's zarr.json
        cases[case_id].update(values)
    return changed
