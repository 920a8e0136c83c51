"""Finding the cases in a data folder (the competition's layout) and pairing volumes with labels by id.

Accepted layout::

    DATA/train/volume/<volume-ID>.nii[.gz]
    DATA/train/segmentation/<segmentation-ID>.nii[.gz]
    DATA/test/<volume-ID>.nii[.gz]      or   DATA/test/volume/<volume-ID>.nii[.gz]

A case id is the file name without `.nii` / `.nii.gz` and without a `volume-` / `segmentation-` prefix.
Volumes and labels pair by that id, never by sort order. `DATA/test_labels/` (written by `liverctl
synth` for scoring) and files that are not named `*.nii` / `*.nii.gz` are ignored.

Problems with single cases (a label without volume, two files with one id, ...) do not stop the others:
they are collected in `DataLayout.problems`, one `LiverctlError` each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from liverctl.errors import LiverctlError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_PREFIXES = ("volume-", "segmentation-")
# Case ids become Zarr node names and submission row ids: keep them to a safe alphabet.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class CaseFiles:
    """One case as found on disk: its id, split, volume file and (training cases) label file."""

    case_id: str
    split: str  # "train" or "test"
    volume: Path
    label: Path | None = None


@dataclass
class DataLayout:
    """The cases of a data folder, sorted by id, and the problems that made others unusable."""

    root: Path
    cases: list[CaseFiles] = field(default_factory=list)
    problems: list[LiverctlError] = field(default_factory=list)

    def by_split(self, split: str) -> list[CaseFiles]:
        return [c for c in self.cases if c.split == split]


def is_nifti_name(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def case_id_from_name(name: str) -> str:
    """`volume-12.nii.gz` -> `12`; `segmentation-12.nii` -> `12`; `ct_7.nii.gz` -> `ct_7`."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for prefix in _PREFIXES:
        if name.lower().startswith(prefix):
            name = name[len(prefix) :]
            break
    return name


def _nifti_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_nifti_name(p))


def _index_by_id(files: list[Path], problems: list[LiverctlError]) -> dict[str, Path]:
    """Map case id -> file; ids claimed by two files (or unsafe ids) become problems and are dropped."""
    by_id: dict[str, list[Path]] = {}
    for path in files:
        by_id.setdefault(case_id_from_name(path.name), []).append(path)
    found: dict[str, Path] = {}
    for case_id, paths in by_id.items():
        if len(paths) > 1:
            others = ", ".join(p.name for p in paths[1:])
            problems.append(
                LiverctlError(f"case id {case_id!r} is also used by {others}; rename one", path=paths[0])
            )
        elif not _SAFE_ID.match(case_id):
            problems.append(
                LiverctlError(
                    f"case id {case_id!r} must start with a letter or digit and use only letters, "
                    "digits, '.', '_' and '-'",
                    path=paths[0],
                )
            )
        else:
            found[case_id] = paths[0]
    return found


def find_cases(data_dir: str | Path) -> DataLayout:
    """Find every case under `data_dir` (see the module docstring for the layout).

    Raises `LiverctlError` when the folder is missing or holds no NIfTI volume at all; per-case problems
    (unpaired files, duplicate ids) are returned in `DataLayout.problems`.
    """
    root = Path(data_dir)
    if not root.exists():
        raise LiverctlError("no such folder", path=root)
    if not root.is_dir():
        raise LiverctlError("is a file, expected a data folder with train/ and/or test/", path=root)

    layout = DataLayout(root=root)
    problems = layout.problems
    train_volumes = _nifti_files(root / "train" / "volume")
    train_labels = _nifti_files(root / "train" / "segmentation")
    test_volumes = _nifti_files(root / "test") + _nifti_files(root / "test" / "volume")

    volumes = _index_by_id(train_volumes, problems)
    labels = _index_by_id(train_labels, problems)
    tests = _index_by_id(test_volumes, problems)

    for case_id in sorted(set(volumes) & set(tests)):
        problems.append(
            LiverctlError(
                f"case id {case_id!r} is used by a training volume ({volumes[case_id]}) and a test volume",
                path=tests[case_id],
            )
        )
        del volumes[case_id], tests[case_id]
        labels.pop(case_id, None)

    for case_id in sorted(set(labels) - set(volumes)):
        problems.append(
            LiverctlError(f"label of case {case_id!r} has no volume in train/volume/", path=labels[case_id])
        )
    for case_id in sorted(set(volumes) - set(labels)):
        problems.append(
            LiverctlError(
                f"training volume of case {case_id!r} has no label in train/segmentation/",
                path=volumes[case_id],
            )
        )

    for case_id in sorted(set(volumes) & set(labels)):
        layout.cases.append(CaseFiles(case_id, "train", volumes[case_id], labels[case_id]))
    for case_id, path in sorted(tests.items()):
        layout.cases.append(CaseFiles(case_id, "test", path, None))
    layout.cases.sort(key=lambda c: c.case_id)

    if not layout.cases and not problems:
        raise LiverctlError(
            "no NIfTI volumes found (expected train/volume/*.nii[.gz], train/segmentation/*.nii[.gz], "
            "test/*.nii[.gz] or test/volume/*.nii[.gz])",
            path=root,
        )
    return layout
