"""LiTS as published: `volume-N.nii` / `segmentation-N.nii` (liver 1, tumour 2), flat or in batch folders::

    LITS/volume-0.nii, LITS/segmentation-0.nii, ...                       or
    LITS/Training Batch 1/volume-0.nii, LITS/Training Batch 2/segmentation-28.nii, ...
    LITS/Test Batch/test-volume-0.nii   (test volumes, id `test-volume-0`)

and as its copies are unpacked: the challenge's zips put their batch folder under
`media/nas/01_Datasets/CT/LITS/`; Kaggle's "liver-tumor-segmentation" is `volume_pt1` .. `volume_pt5` beside
`segmentations/` in an `archive/` folder, its "part 2" (`volume_pt6` ..) another `archive (1)/` beside it;
a zip unpacked into a folder of its own name gives `LITS17/LITS17/...`.

Volumes and segmentations pair by number, wherever in the tree each one lies: the folder, its batch folders
and, below a folder holding no NIfTI file (a download's own folder of batch folders), one level more (`_DEPTH`);
a folder holding no NIfTI file and one folder (a wrapper: `media/`, `nas/`, ..., `LITS17/`) costs no level. A
folder below those is not looked into, and named in a note. LiTS ships no file naming its label values: give
`--liver-labels` (1,2 = liver and tumour).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from liverctl.data.sources.common import (
    DataLayout,
    index_by_id,
    is_nifti_name,
    left_out_note,
    nifti_files,
    pair_cases,
)
from liverctl.plural import agree, plural

NAME = "lits"
DESCRIPTION = "lits (volume-N.nii + segmentation-N.nii, flat or in batch folders)"
LIVER_LABELS_HINT = "LiTS: 1,2 = liver and tumour"  # LiTS names no labels: ingest asks for them with this
_DEPTH = 3  # the folder, its batch folders, and one level below them (archive/volume_pt1 beside archive (1)/...)
_ANY_FOLDER_DEPTH = 2  # the folder and its batch folders: looked into whatever they hold; the third level only below
# a folder holding no NIfTI (a download's folder of batch folders): a TotalSegmentator folder's 1228 subject folders
# each hold a ct.nii.gz, so their segmentations/ (117 files each) are not listed while its layout is being found
_MAX_FOLDERS = 500  # folders looked into at most: a LiTS tree has a dozen, a home folder given by mistake thousands
_NAMES = "volume-N, segmentation-N or test-volume-N (.nii, .nii.gz)"
_ZIP_JUNK = "__MACOSX"  # what macOS's zip adds beside the folders it packs: resource forks, no volume


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name != _ZIP_JUNK and not is_nifti_name(p))


def _first_visit(folder: Path, seen: set[Path]) -> bool:
    """False for a link to a folder already looked into (a link back up the tree would be walked round and round);
    only links are resolved: a plain folder is reached once (resolving every one made finding a TotalSegmentator
    folder's layout a third slower)."""
    if not folder.is_symlink():
        return True
    target = folder.resolve()
    if target in seen:
        return False
    seen.add(target)
    return True


def _files(root: Path, skipped: list[str] | None = None) -> list[Path]:
    """The NIfTI files of the folder and the folders below it down to `_DEPTH` levels, a wrapper folder (no NIfTI
    file, one folder) costing none (`nifti_files`: other files named in `skipped`); in `skipped` a note per folder
    naming its NIfTI files that are no volume-N, segmentation-N or test-volume-N (a renamed or extra file was
    left out without a word), and one per folder whose subfolders lie deeper than that (LiTS the tool did not
    find lay there without a word)."""
    found, level, seen, looked = [], deque([root]), {root.resolve()}, 0
    for depth in range(_DEPTH):
        nxt: deque[Path] = deque()
        while level:
            folder = level.popleft()
            looked += 1
            if looked > _MAX_FOLDERS:
                if skipped is not None:
                    skipped.append(f"{root}: not looked into beyond its first {_MAX_FOLDERS} folders: {folder} and "
                                   "the folders after it left out; give the folder that holds the LiTS files")
                return found
            files = nifti_files(folder, skipped)
            unnamed = [p.name for p in files if _kind(p) is None]
            if skipped is not None and unnamed:
                skipped.append(left_out_note(folder, unnamed, f"not named {_NAMES}"))
            found += files
            subfolders = [p for p in _subfolders(folder) if _first_visit(p, seen)]
            if not files and len(subfolders) == 1:
                level.append(subfolders[0])  # a wrapper: its one folder is looked into at this level
            elif depth + 1 < _ANY_FOLDER_DEPTH or (depth + 1 < _DEPTH and not files):
                nxt += subfolders
            elif subfolders and skipped is not None:
                names = [p.name for p in subfolders]
                shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
                skipped.append(f"{folder}: {plural(len(names), 'folder')} below LiTS's batch folders not looked into, "
                               f"any LiTS file in {agree(len(names), 'it', 'them')} left out: {shown}")
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
