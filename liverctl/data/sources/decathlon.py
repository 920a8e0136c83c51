"""The Medical Segmentation Decathlon's layout (Task03_Liver)::

    TASK/dataset.json        "labels": {"0": "background", "1": "liver", "2": "cancer"},
                             "training": [{"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}],
                             "test": ["./imagesTs/liver_132.nii.gz"]
    TASK/imagesTr/liver_0.nii.gz, TASK/labelsTr/liver_0.nii.gz, TASK/imagesTs/liver_132.nii.gz

The train and test lists of dataset.json say which files are cases (a NIfTI file in their folders that they
do not list gets a note; without them, imagesTr/ and labelsTr/ pair by file name and imagesTs/ holds the test
volumes); a case id is the image's file name without `.nii.gz`. AMOS22 (amos22.zip) is this layout with a
labelled validation set, imagesVa/ + labelsVa/ and its `"validation"` list: those are training cases too (for
liverctl every extra source gives training cases), and its test list's entries are `{"image": ...}`; its 100 MRI
cases are left out (`amos.py`). The macOS `._liver_0.nii.gz` files of the published tarball are ignored.

BTCV as MONAI's tutorials (UNETR, Swin UNETR) convert it is this layout too: imagesTr/img0001.nii.gz,
labelsTr/label0001.nii.gz, and MONAI's `dataset_0.json` in dataset.json's stead ("labels" "6": "liver", "training"
and "validation" lists, both training cases here). Without that list its files pair by no name: the source is
refused, one line saying what to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from liverctl.data.sources import amos
from liverctl.data.sources.common import (
    DataLayout,
    case_id_from_name,
    index_by_id,
    left_out_note,
    nifti_files,
    pair_cases,
)
from liverctl.data.sources.labels import DATASET_JSON, label_names, read_dataset_json
from liverctl.errors import LiverctlError
from liverctl.printable import quoted

NAME = "decathlon"
DESCRIPTION = "decathlon (imagesTr/, labelsTr/, imagesTs/, dataset.json)"
LIVER_LABELS_HINT = "the task's dataset.json names them; Task03_Liver: 1,2 = liver and cancer"  # none beside it
MONAI_DATALIST = "dataset_0.json"  # MONAI's BTCV tutorials' list, "labels" ("6": "liver") and splits: dataset.json's
_TRAIN_FOLDERS = ("imagesTr", "labelsTr", "imagesVa", "labelsVa")  # AMOS's labelled validation set: more training


def looks_like(root: Path) -> bool:
    return bool(nifti_files(root / "imagesTr"))


def _listed(datalist: Path, entry: Any, problems: list[LiverctlError]) -> Path | None:
    """The file an entry of `datalist` (root/dataset.json) names, relative to its folder; None (a problem) where
    it names none."""
    if not isinstance(entry, str) or not entry:
        problems.append(LiverctlError(f"lists {quoted(entry)}, not a file name", path=datalist))
        return None
    path = datalist.parent / entry  # "./imagesTr/liver_0.nii.gz": pathlib drops the "./"
    try:
        found = path.is_file() or path.is_symlink()  # a link to nowhere is named when read (open_nifti)
    except OSError as exc:  # a name no file can have (too long: pathlib passes ENAMETOOLONG on)
        problems.append(LiverctlError(f"lists {quoted(entry)}, not a file name ({exc.strerror})", path=datalist))
        return None
    if not found:
        problems.append(LiverctlError(f"is listed in {datalist.name} but missing", path=path))
        return None
    return path


def _listed_pairs(datalist: Path, entries: list, key: str, problems: list[LiverctlError]) -> list[tuple[Path, Path]]:
    """(image, label) of each entry of `datalist`'s `key` list that names both files; an entry listed twice is
    one case (not 'also used by' itself)."""
    pairs: dict[tuple[Path, Path], None] = {}  # in list order
    for item in entries:
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            problems.append(
                LiverctlError(f'has a {key} entry {quoted(item)} without "image" and "label"', path=datalist)
            )
            continue
        image, label = _listed(datalist, item["image"], problems), _listed(datalist, item["label"], problems)
        if image is not None and label is not None:
            pairs[image, label] = None
    return list(pairs)


def _test_entry(entry: Any) -> Any:
    """A test list's entry as a file name: the Decathlon's `"./imagesTs/liver_132.nii.gz"`, or AMOS's (MONAI's
    datalist) `{"image": "./imagesTs/amos_0002.nii.gz"}`."""
    return entry["image"] if isinstance(entry, dict) and "image" in entry else entry


def _datalist(root: Path) -> Path:
    """root/dataset.json, or MONAI's dataset_0.json where only that is there (BTCV as MONAI's tutorials convert it)."""
    monai = root / MONAI_DATALIST
    return monai if monai.is_file() and not (root / DATASET_JSON).exists() else root / DATASET_JSON


def find(root: Path) -> DataLayout:
    datalist = _datalist(root)
    payload = read_dataset_json(root, datalist.name) or {}
    layout = DataLayout(root=root, layout=NAME, label_names=label_names(payload or None, root, datalist.name),
                        labels_named_by=datalist.name)
    problems = layout.problems
    training, validation = payload.get("training"), payload.get("validation")
    if isinstance(training, list):
        pairs = _listed_pairs(datalist, training, "training", problems)
        if isinstance(validation, list):  # AMOS's labelled validation set: training cases for liverctl
            pairs = list(dict.fromkeys([*pairs, *_listed_pairs(datalist, validation, "validation", problems)]))
        volume_files, label_files = [p[0] for p in pairs], [p[1] for p in pairs]
        volumes = index_by_id(volume_files, problems)
        labels = {case_id_from_name(v.name): lab for v, lab in pairs}
        labels = {k: v for k, v in labels.items() if k in volumes}
        # imagesVa/ too without a "validation" list: its labelled cases are not left out without a word
        _unlisted(datalist, _TRAIN_FOLDERS, volume_files + label_files, layout.skipped)
    else:
        if training is not None:  # a list someone's tool wrote as something else: said, not silently passed over
            layout.skipped.append(f'{datalist}: "training" is {_kind(training)}, not a list of cases: '
                                  "imagesTr/ and labelsTr/ paired by file name instead")
        volumes = index_by_id([p for f in _TRAIN_FOLDERS[::2] for p in nifti_files(root / f, layout.skipped)], problems)
        labels = index_by_id([p for f in _TRAIN_FOLDERS[1::2] for p in nifti_files(root / f, layout.skipped)], problems)
        if _numbered_apart(volumes, labels):  # one line, not two per case ('has no label', 'has no volume')
            raise LiverctlError(
                f"imagesTr/ holds {next(iter(volumes.values())).name} and labelsTr/ {next(iter(labels.values())).name}"
                f": BTCV as MONAI's tutorials convert it, whose {MONAI_DATALIST} pairs them and names its labels "
                f"(liver 6); put that {MONAI_DATALIST} beside them, or give BTCV's RawData/ folder as published",
                path=root)
    test_list = payload.get("test")
    if isinstance(test_list, list):
        test_files = list(dict.fromkeys(
            p for p in (_listed(datalist, _test_entry(e), problems) for e in test_list) if p is not None))
        _unlisted(datalist, ("imagesTs",), test_files, layout.skipped)
    else:
        if test_list is not None:
            layout.skipped.append(f'{datalist}: "test" is {_kind(test_list)}, not a list of files: the '
                                  "test volumes taken from imagesTs/ instead")
        test_files = nifti_files(root / "imagesTs", layout.skipped)
    where = ("imagesTr/ or imagesVa/", "labelsTr/ or labelsVa/") if (root / "imagesVa").is_dir() else ("imagesTr/",
                                                                                                     "labelsTr/")
    pair_cases(layout, volumes, labels, index_by_id(test_files, problems), where)
    amos.leave_out_mri(layout)
    return layout


def _numbered_apart(volumes: dict[str, Path], labels: dict[str, Path]) -> bool:
    """Whether imagesTr/ and labelsTr/ hold BTCV's img0001 and label0001, no id in common (MONAI's conversion
    without its list)."""
    numbers = [{m[1] for i in ids if (m := re.match(rf"^{word}(\d+)$", i))} for word, ids in (("img", volumes),
                                                                                              ("label", labels))]
    return bool(volumes) and not set(volumes) & set(labels) and len(numbers[0]) == len(volumes) and bool(
        numbers[0] & numbers[1])


def _unlisted(datalist: Path, folders: tuple[str, ...], listed: list[Path], skipped: list[str]) -> None:
    """A note per folder naming its NIfTI files that `datalist`'s list (`listed`) does not name: a case added to
    the folder but not to the list was left out without a word."""
    named = {os.path.normpath(p) for p in listed}
    for folder in folders:
        others = [p.name for p in nifti_files(datalist.parent / folder) if os.path.normpath(p) not in named]
        if others:
            skipped.append(left_out_note(datalist.parent / folder, others, f"not listed in {datalist.name}"))


def _kind(value: Any) -> str:
    """What a JSON value is, for a line: 'a text', 'a number', ... (its content is anyone's, never shown)."""
    return {str: "a text", bool: "true or false", int: "a number", float: "a number", dict: "an object"}.get(
        type(value), "something else")
