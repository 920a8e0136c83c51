"""TotalSegmentator's dataset (Zenodo record 10047292), one folder per subject::

    DATA/s0000/ct.nii.gz
    DATA/s0000/segmentations/liver.nii.gz     one binary mask per structure: 1 = liver
    DATA/meta.csv                             (not read)

and the flat form of its test files: `DATA/<case>/ct.nii.gz` beside `DATA/<case>/liver.nii.gz`. A case id
is the subject folder's name. Every subject is a training case (the dataset has no unlabelled test
scans); one whose scan misses the liver has an empty mask and is ingested as such. A subject folder with
a CT and no liver mask, or with both forms of the mask, is a problem of its own and the others go on; one with
NIfTI files but no ct.nii.gz (a renamed CT) gets a note.
"""

from __future__ import annotations

from pathlib import Path

from liverctl.data.sources.common import DataLayout, check_id, left_out_note, nifti_files
from liverctl.errors import LiverctlError

NAME = "totalseg"
DESCRIPTION = "totalseg (one folder per case: CASE/ct.nii.gz, CASE/segmentations/liver.nii.gz)"
LABELS_NAMED_BY = "TotalSegmentator's liver.nii.gz"
LIVER = 1


def _first_file(folder: Path, stem: str) -> Path | None:
    """`stem`.nii.gz or `stem`.nii in `folder`; a link to nowhere counts (reading it names it, where leaving
    it out would drop the case without a word)."""
    return next((p for p in (folder / f"{stem}.nii.gz", folder / f"{stem}.nii") if p.is_file() or p.is_symlink()),
                None)


def _subjects(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def looks_like(root: Path) -> bool:
    return any(_first_file(folder, "ct") is not None for folder in _subjects(root))


def find(root: Path) -> DataLayout:
    layout = DataLayout(root=root, layout=NAME, label_names={LIVER: "liver"}, labels_named_by=LABELS_NAMED_BY)
    no_ct = []
    for folder in _subjects(root):
        ct = _first_file(folder, "ct")
        if ct is None:  # a folder of notes is no case; one with NIfTI files but no ct.nii.gz is said
            if nifti_files(folder) or nifti_files(folder / "segmentations"):
                no_ct.append(folder.name)
            continue
        masks = [p for p in (_first_file(folder / "segmentations", "liver"), _first_file(folder, "liver")) if p]
        if not masks:
            layout.problems.append(
                LiverctlError("has no liver mask (segmentations/liver.nii.gz or liver.nii.gz) beside it", path=ct)
            )
        elif len(masks) > 1:
            layout.problems.append(
                LiverctlError(f"has two liver masks, {masks[0].relative_to(folder)} and "
                              f"{masks[1].relative_to(folder)}; keep one", path=folder)
            )
        elif check_id(folder.name, folder, layout.problems):
            layout.add_training_case(folder.name, ct, masks[0])
    if no_ct:
        layout.skipped.append(left_out_note(root, no_ct, "without ct.nii.gz or ct.nii", "folder"))
    return layout
