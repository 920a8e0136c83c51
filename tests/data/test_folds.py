"""Patient-level folds: balanced by liver volume, deterministic, independent of the order cases come in."""

from __future__ import annotations

from liverctl.data.folds import assign_folds


def test_folds_are_balanced_and_deterministic():
    voxels = {f"c{i}": v for i, v in enumerate([5, 100, 7, 3000, 42, 900, 11, 0, 250, 64])}
    folds = assign_folds(voxels, 5, seed=0)
    assert folds == assign_folds(dict(reversed(list(voxels.items()))), 5, seed=0)  # not order-dependent
    assert sorted(folds.values()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    by_size = sorted(voxels, key=voxels.get)
    assert len({folds[c] for c in by_size[:5]}) == 5  # the 5 smallest livers land in 5 different folds
    assert assign_folds(voxels, 5, seed=1) != folds
