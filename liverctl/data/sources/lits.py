"""LiTS as published: `volume-N.nii` / `segmentation-N.nii` (liver 1, tumour 2), flat or in batch folders::

    LITS/volume-0.nii, LITS/segmentation-0.nii, ...                       or
    LITS/Training Batch 1/volume-0.nii, LITS/Training Batch 2/segmentation-28.nii, ...
    LITS/Test Batch/test-volume-0.nii   (test volumes, id `test-volume-0`)

Volumes and segmentations pair by number, wherever in the tree each one lies (two levels deep at
most). LiTS ships no file naming its label values: give `--liver-labels` (1,2 = liver and tumour).
"""

from __future__ import annotations

from pathlib import Path

from liverctl.data.sources.common import (
    DataLayout,
    index_by_id,
    is_nifti_name,
    left_out_note,
    nifti_files,
    pair_cases,
)

NAME = "lits"
DESCRIPTION = "lits (volume-N.nii + segmentation-N.nii, flat or in batch folders)"
_DEPTH = 2  # the folder itself and batch folders inside it
_NAMES = "volume-N, segmentation-N or test-volume-N (.nii, .nii.gz)"


def _files(root: Path, skipped: list[str] | None = None) -> list[Path]:
    """The NIfTI files of the folder and its batch folders (`nifti_files`: other files named in `skipped`), and
    in `skipped` a note per folder naming its NIfTI files that are no volume-N, segmentation-N or test-volume-N
    (a renamed or extra file was left out without a word)."""
    found, level = [], [root]
    for _ in range(_DEPTH):
        nxt = []
        for folder in level:
            nxt += sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and not is_nifti_name(p))
            files = nifti_files(folder, skipped)
            unnamed = [p.name for p in files if _kind(p) is None]
            if skipped is not None and unnamed:
                skipped.append(left_out_note(folder, unnamed, f"not named {_NAMES}"))
            found += files
        level = nxt
    return found


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.startswith("volume-"):
        return "volume"
    if name.startswith("segmentation-"):
        return "label"
    if name.startswith("test-volume-"):
        return "test"
    return None


def looks_like(root: Path) -> bool:
    kinds = {_kind(p) for p in _files(root)}
    return "volume" in kinds and "label" in kinds


def find(root: Path) -> DataLayout:
    layout = DataLayout(root=root, layout=NAME)
    files: dict[str | None, list[Path]] = {}
    for path in _files(root, layout.skipped):
        files.setdefault(_kind(path), []).append(path)
    pair_cases(
        layout,
        index_by_id(files.get("volume", []), layout.problems),
        index_by_id(files.get("label", []), layout.problems),
        index_by_id(files.get("test", []), layout.problems),
        ("the LiTS folder (volume-N.nii)", "the LiTS folder (segmentation-N.nii)"),
    )
    return layout
