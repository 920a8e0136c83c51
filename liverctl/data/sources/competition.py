"""The competition's own layout::

    DATA/train/volume/<volume-ID>.nii[.gz]
    DATA/train/segmentation/<segmentation-ID>.nii[.gz]
    DATA/test/<volume-ID>.nii[.gz]      or   DATA/test/volume/<volume-ID>.nii[.gz]

A case id is the file name without `.nii` / `.nii.gz` and without a `volume-` / `segmentation-` prefix.
Volumes and labels pair by that id, never by sort order. `DATA/test_labels/` (written by `liverctl
synth` for scoring) and files that are not named `*.nii` / `*.nii.gz` are ignored.
"""

from __future__ import annotations

from pathlib import Path

from liverctl.data.sources.common import DataLayout, index_by_id, nifti_files, pair_cases

NAME = "competition"
DESCRIPTION = "competition (train/volume, train/segmentation, test/)"


def _folders(root: Path, skipped: list[str] | None = None) -> tuple[list[Path], list[Path], list[Path]]:
    return (
        nifti_files(root / "train" / "volume", skipped),
        nifti_files(root / "train" / "segmentation", skipped),
        nifti_files(root / "test", skipped) + nifti_files(root / "test" / "volume", skipped),
    )


def looks_like(root: Path) -> bool:
    return any(_folders(root))


def find(root: Path) -> DataLayout:
    layout = DataLayout(root=root, layout=NAME)
    train_volumes, train_labels, test_volumes = _folders(root, layout.skipped)
    pair_cases(
        layout,
        index_by_id(train_volumes, layout.problems),
        index_by_id(train_labels, layout.problems),
        index_by_id(test_volumes, layout.problems),
        ("train/volume/", "train/segmentation/"),
    )
    return layout
