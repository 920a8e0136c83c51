"""What every layout shares: one case's files, a source's cases and problems, case ids, pairing by id."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from liverctl.data.nifti import PAIR_SUFFIXES, is_pair_name, pair_partner
from liverctl.data.nifti import SUFFIXES as NIFTI_SUFFIXES
from liverctl.data.nifti import is_nifti_name as _is_nifti_name
from liverctl.errors import LiverctlError
from liverctl.plural import agree, plural
from liverctl.printable import quoted

_PREFIXES = ("volume-", "segmentation-")
# Case ids become Zarr node names and submission row ids: keep them to a safe alphabet.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class CaseFiles:
    """One case as found on disk: its id, split, volume file and (training cases) label file.

    `known_labels`: the label values the source names (its dataset.json), background included; a label
    holding any other value is reported. None: no such list (the values are not checked).
    `labels_named_by`: what names them, for that report.
    """

    case_id: str
    split: str  # "train" or "test"
    volume: Path
    label: Path | None = None
    known_labels: tuple[int, ...] | None = None
    labels_named_by: str = "dataset.json"


class Problems(list):
    """A source's problems, one `LiverctlError` each, and the case ids they took out (`refused`): an id
    refused for its volume (two files, other channels, an unsafe name) is not reported again for its
    label having no volume."""

    def __init__(self, *args):
        super().__init__(*args)
        self.refused: set[str] = set()

    def refuse(self, case_id: str, error: LiverctlError) -> None:
        self.refused.add(case_id)
        self.append(error)


@dataclass
class DataLayout:
    """The cases of one data source, sorted by id, and the problems that made others unusable.

    `layout`: the layout's name (`liverctl.data.sources.LAYOUTS`). `label_names`: value -> name from the
    source's dataset.json or its layout (None without either); `labels_named_by` says which. `skipped`:
    notes on files deliberately left out.
    """

    root: Path
    cases: list[CaseFiles] = field(default_factory=list)
    problems: Problems = field(default_factory=Problems)
    layout: str = "competition"
    label_names: dict[int, str] | None = None
    labels_named_by: str = "dataset.json"
    skipped: list[str] = field(default_factory=list)

    def add_training_case(self, case_id: str, volume: Path, label: Path) -> None:
        """A volume + label pair, its label values checked against the source's names (background included)."""
        known = None if self.label_names is None else tuple(sorted({0, *self.label_names}))
        self.cases.append(CaseFiles(case_id, "train", volume, label, known, self.labels_named_by))

    def by_split(self, split: str) -> list[CaseFiles]:
        return [c for c in self.cases if c.split == split]


def is_nifti_name(path: Path) -> bool:
    return _is_nifti_name(path.name)


def strip_nifti_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES + PAIR_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_id_from_name(name: str) -> str:
    """`volume-12.nii.gz` -> `12`; `segmentation-12.nii` -> `12`; `ct_7.nii.gz` -> `ct_7`."""
    name = strip_nifti_suffix(name)
    for prefix in _PREFIXES:
        if name.lower().startswith(prefix):
            name = name[len(prefix) :]
            break
    return name


def nifti_files(folder: Path, skipped: list[str] | None = None, *, pairs: bool = False) -> list[Path]:
    """The NIfTI files directly in `folder` (hidden files, e.g. macOS `._x.nii.gz`, left out), sorted:
    the one rule for ingest's layouts, evaluate's label folder and postprocess's input folder.

    `pairs` (evaluate, postprocess): Analyze / NIfTI pairs too, each as its NAME.hdr, and a NAME.hdr or NAME.img
    whose other half is not there as itself, so that reading it says which half is missing
    (`liverctl.data.nifti.check_pair`) rather than the image going missing without a word.

    A folder named like NIfTI is not a file and is left out; a link that leads to no file (a git-annex or
    DataLad file not fetched yet) is kept, so that reading it names it (`liverctl.data.nifti.open_nifti`)
    rather than the case going missing without a word. `skipped`: where given, gets a note naming the other
    files in `folder` (a `.mha` or `.hdr`/`.img` test volume would otherwise be missing from the submission
    without a word)."""
    if not folder.is_dir():
        return []
    visible = sorted(p for p in folder.iterdir() if not p.name.startswith("."))

    def wanted(p: Path) -> bool:
        if is_nifti_name(p):
            return True
        # NAME.img stands for its pair only where no NAME.hdr is there to
        return pairs and is_pair_name(p.name) and (p.suffix.lower() == ".hdr" or not pair_partner(p).exists())

    others = [p.name for p in visible if not wanted(p) and p.is_file()
              and not (pairs and is_pair_name(p.name))]
    others += [f"{p.name} (a folder)" for p in visible if wanted(p) and p.is_dir()]
    if skipped is not None and others:
        skipped.append(left_out_note(folder, others, "not NIfTI (.nii, .nii.gz)"))
    return [p for p in visible if wanted(p) and not p.is_dir()]


def left_out_note(where: Path, names: list[str], why: str, noun: str = "file") -> str:
    """One line naming what a layout leaves out of `where` (the first three `names`) and `why` ("not NIfTI ...",
    "not named ..."): a user's renamed or extra file is said, not dropped without a word."""
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{where}: {plural(len(names), noun)} that {agree(len(names), 'is', 'are')} {why} left out: {shown}"


def check_id(case_id: str, path: Path, problems: Problems) -> bool:
    if SAFE_ID.match(case_id):
        return True
    problems.refuse(
        case_id,
        LiverctlError(
            f"case id {quoted(case_id)} must start with a letter or digit and use only letters, digits, '.', '_' and '-'",
            path=path,
        ),
    )
    return False


def index_by_id(files: list[Path], problems: Problems, id_of=case_id_from_name) -> dict[str, Path]:
    """Map case id -> file; ids claimed by two files (or unsafe ids) become problems and are dropped."""
    by_id: dict[str, list[Path]] = {}
    for path in files:
        by_id.setdefault(id_of(path.name), []).append(path)
    found: dict[str, Path] = {}
    for case_id, paths in by_id.items():
        if len(paths) > 1:
            others = ", ".join(str(p) if p.parent != paths[0].parent else p.name for p in paths[1:])
            problems.refuse(case_id, LiverctlError(f"case id {quoted(case_id)} is also used by {others}; rename one",
                                                   path=paths[0]))
        elif check_id(case_id, paths[0], problems):
            found[case_id] = paths[0]
    return found


def pair_cases(
    layout: DataLayout,
    volumes: dict[str, Path],
    labels: dict[str, Path],
    tests: dict[str, Path],
    where: tuple[str, str],
) -> None:
    """Training cases from volumes and labels paired by id, test cases from `tests`; unpaired files and
    ids used by a training and a test volume become problems. `where`: the (volume, label) folder names
    for the messages."""
    problems = layout.problems
    for case_id in sorted(set(volumes) & set(tests)):
        problems.append(
            LiverctlError(
                f"case id {quoted(case_id)} is used by a training volume ({volumes[case_id]}) and a test volume",
                path=tests[case_id],
            )
        )
        del volumes[case_id], tests[case_id]
        labels.pop(case_id, None)
    for case_id in sorted(set(labels) - set(volumes) - problems.refused):  # a refused volume is said once
        problems.append(LiverctlError(f"label of case {quoted(case_id)} has no volume in {where[0]}", path=labels[case_id]))
    for case_id in sorted(set(volumes) - set(labels) - problems.refused):
        problems.append(
            LiverctlError(f"training volume of case {quoted(case_id)} has no label in {where[1]}", path=volumes[case_id])
        )
    for case_id in sorted(set(volumes) & set(labels)):
        layout.add_training_case(case_id, volumes[case_id], labels[case_id])
    for case_id, path in sorted(tests.items()):
        layout.cases.append(CaseFiles(case_id, "test", path, None))
    layout.cases.sort(key=lambda c: c.case_id)
