"""Data sources: finding the cases of a folder in any layout liverctl knows, one small module per layout.

| layout | module | what it looks like |
|---|---|---|
| competition | `competition.py` | train/volume, train/segmentation, test/ |
| lits | `lits.py` | volume-N.nii + segmentation-N.nii, flat or in batch folders |
| decathlon | `decathlon.py` | imagesTr/, labelsTr/, imagesTs/, dataset.json |
| nnunet | `nnunet.py` | imagesTr/NAME_0000.nii.gz, labelsTr/NAME.nii.gz, dataset.json |
| totalseg | `totalseg.py` | one folder per case: CASE/ct.nii.gz, CASE/segmentations/liver.nii.gz |
| flare | `flare.py` | FLARE22: images/FLARE22_Tr_0001_0000.nii.gz, labels/FLARE22_Tr_0001.nii.gz |
| btcv | `btcv.py` | BTCV (Synapse): RawData/Training/img/img0001.nii.gz, Training/label/label0001.nii.gz, Testing/img/ |

`find_source(path)` recognises the layout (in the order of `LAYOUTS`) or says which ones it knows;
`find_source(path, layout=...)` forces one. Problems with single cases (a label without volume, two
files with one id, ...) do not stop the others: they are collected in `DataLayout.problems`, one
`LiverctlError` each. `labels.py` turns a dataset.json's label names into liver values; a layout whose
dataset ships none but has a fixed list (BTCV, FLARE22, TotalSegmentator) names its values itself. A layout whose
labels can go unnamed (LiTS, another FLARE year, a Decathlon or nnU-Net folder without dataset.json) holds the hint
ingest's "give --liver-labels" line ends with, `LIVER_LABELS_HINT`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from liverctl.data.sources import btcv, competition, decathlon, flare, lits, nnunet, totalseg
from liverctl.data.sources.common import (
    NIFTI_SUFFIXES,
    SAFE_ID,
    CaseFiles,
    DataLayout,
    case_id_from_name,
    is_nifti_name,
)
from liverctl.errors import LiverctlError
from liverctl.files import check_no_dangling_link

# Detection order: nnU-Net before the Decathlon (both have imagesTr/; only nnU-Net has _0000 names);
# TotalSegmentator's subject folders last (the others' folders never hold a ct.nii.gz).
LAYOUTS: dict[str, ModuleType] = {m.NAME: m for m in (competition, nnunet, decathlon, btcv, flare, lits, totalseg)}

__all__ = [
    "LAYOUTS",
    "NIFTI_SUFFIXES",
    "SAFE_ID",
    "CaseFiles",
    "DataLayout",
    "case_id_from_name",
    "detect_layout",
    "find_cases",
    "find_source",
    "is_nifti_name",
]


def known_layouts() -> str:
    return "; ".join(m.DESCRIPTION for m in LAYOUTS.values())


def _check_folder(root: Path) -> None:
    if not root.exists():
        check_no_dangling_link(root, option="data folder")
        raise LiverctlError("no such folder", path=root)
    if not root.is_dir():
        raise LiverctlError("is a file, expected a data folder", path=root)


_ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".7z", ".rar")
_SUBFOLDERS_LOOKED_AT = 50


def _where_the_cases_are(root: Path) -> str:
    """For a folder no layout fits, a new user's usual slips: the folder above the data (a subfolder fits a
    layout: give that), or a download not unpacked yet (Task03_Liver.tar)."""
    try:
        entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except OSError:
        return ""
    for folder in [p for p in entries if p.is_dir()][:_SUBFOLDERS_LOOKED_AT]:
        name = next((name for name, module in LAYOUTS.items() if module.looks_like(folder)), None)
        if name is not None:
            return f" (its folder {folder.name} looks like the {name} layout: give {folder} instead)"
    archives = [p.name for p in entries if p.is_file() and p.name.lower().endswith(_ARCHIVES)]
    if archives:
        return f" (it holds {', '.join(archives[:3])}: unpack it and give the folder it makes)"
    return ""


def detect_layout(data_dir: str | Path) -> str | None:
    """The name of the first layout in `LAYOUTS` that `data_dir` looks like; None if none."""
    root = Path(data_dir)
    _check_folder(root)
    return next((name for name, module in LAYOUTS.items() if module.looks_like(root)), None)


def find_source(data_dir: str | Path, layout: str | None = None) -> DataLayout:
    """Every case of the source at `data_dir`, in `layout` (None: recognised from the files).

    Raises `LiverctlError` when the folder is missing, no layout fits (naming the ones known), the
    forced layout is unknown, or the folder holds no case at all; per-case problems are returned in
    `DataLayout.problems`.
    """
    root = Path(data_dir)
    _check_folder(root)
    if layout is None:
        layout = detect_layout(root)
        if layout is None:
            raise LiverctlError(
                f"recognises none of the layouts liverctl knows{_where_the_cases_are(root)}: {known_layouts()}; "
                "--layout NAME forces one",
                path=root,
            )
    elif layout not in LAYOUTS:
        raise LiverctlError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}", path=root)
    found = LAYOUTS[layout].find(root)
    if not found.cases and not found.problems:
        if found.skipped:  # every file left out on purpose (AMOS's MRI converted for nnU-Net): say why
            raise LiverctlError(f"no case to ingest in the {LAYOUTS[layout].DESCRIPTION} layout: {found.skipped[-1]}",
                                path=root)
        raise LiverctlError(f"no NIfTI volumes found in the {LAYOUTS[layout].DESCRIPTION} layout", path=root)
    return found


def find_cases(data_dir: str | Path) -> DataLayout:
    """Every case of a folder in the competition's layout (`liverctl.data.sources.competition`)."""
    root = Path(data_dir)
    _check_folder(root)
    found = competition.find(root)
    if not found.cases and not found.problems:
        raise LiverctlError(
            "no NIfTI volumes found (expected train/volume/*.nii[.gz], train/segmentation/*.nii[.gz], "
            "test/*.nii[.gz] or test/volume/*.nii[.gz])",
            path=root,
        )
    return found
