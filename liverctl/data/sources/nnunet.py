"""A raw dataset prepared for nnU-Net::

    DATASET/dataset.json     "labels": {"background": 0, "liver": 1} (v2) or {"0": "background", ...} (v1),
                             "file_ending": ".nii.gz"
    DATASET/imagesTr/NAME_0000.nii.gz, DATASET/labelsTr/NAME.nii.gz, DATASET/imagesTs/NAME_0000.nii.gz

Images carry a 4-digit channel suffix; the case id is NAME. CT has one channel: a case with others
(`_0001`, ...) is reported, not guessed at.
"""

from __future__ import annotations

import re
from pathlib import Path

from liverctl.data.sources import amos
from liverctl.data.sources.common import (
    DataLayout,
    Problems,
    check_id,
    index_by_id,
    nifti_files,
    pair_cases,
    strip_nifti_suffix,
)
from liverctl.data.sources.labels import label_names, read_dataset_json
from liverctl.errors import LiverctlError
from liverctl.printable import quoted

NAME = "nnunet"
DESCRIPTION = "nnunet (imagesTr/NAME_0000.nii.gz, labelsTr/NAME.nii.gz, dataset.json)"
LIVER_LABELS_HINT = "the dataset's dataset.json \"labels\" names them"  # none beside it
_CHANNEL = re.compile(r"^(?P<name>.+)_(?P<channel>\d{4})$")
_LISTED_LOOKED_AT = 20  # entries of dataset.json's list looked at to tell the layouts apart (AMOS lists 240)


def looks_like(root: Path) -> bool:
    """imagesTr/ holds NIfTI, at least half of it named with a channel suffix: one stray `notes.nii.gz` among
    them is a problem of this layout ('has no channel suffix'), where requiring all made the folder read as the
    Decathlon's and every case 'has no label'.

    A case number is no channel: AMOS's `amos_0001.nii.gz` looks suffixed, so a folder is nnU-Net's only where
    some image is channel `_0000` (every nnU-Net case has one) and its dataset.json does not list the images by
    their own names (the Decathlon's and AMOS's `"training"` list does; nnU-Net v1's names them without `_0000`,
    v2's has none)."""
    images = nifti_files(root / "imagesTr")
    channels = [m["channel"] for p in images if (m := _CHANNEL.match(strip_nifti_suffix(p.name)))]
    return bool(images) and 2 * len(channels) >= len(images) and "0000" in channels and not _listed_as_named(root, images)


def _listed_as_named(root: Path, images: list[Path]) -> bool:
    """Whether dataset.json's `"training"` list names a file of imagesTr/ (`images`) as it is (the Decathlon's
    layout)."""
    try:
        training = (read_dataset_json(root) or {}).get("training")
    except LiverctlError:  # unreadable: said when the source is read, not while its layout is being found
        return False
    if not isinstance(training, list):
        return False
    named = {p.name for p in images}
    return any(isinstance(item, dict) and isinstance(item.get("image"), str)
               and Path(item["image"]).parent.name == "imagesTr" and Path(item["image"]).name in named
               for item in training[:_LISTED_LOOKED_AT])


def by_case(files: list[Path], problems: Problems) -> dict[str, Path]:
    """NAME -> NAME_0000 file; files without a channel suffix, and cases with more channels, are problems."""
    channels: dict[str, dict[str, Path]] = {}
    for path in files:
        stem = strip_nifti_suffix(path.name)
        match = _CHANNEL.match(stem)
        if match is None:
            problems.refuse(stem, LiverctlError("has no channel suffix (expected NAME_0000.nii.gz)", path=path))
            continue
        channels.setdefault(match["name"], {})[match["channel"]] = path
    found = {}
    for name, by_channel in sorted(channels.items()):
        if set(by_channel) != {"0000"}:
            problems.refuse(
                name,
                LiverctlError(
                    f"case {quoted(name)} has channels {', '.join(sorted(by_channel))}; liverctl takes one-channel CT (_0000 only)",
                    path=next(iter(by_channel.values())),
                ),
            )
        elif check_id(name, by_channel["0000"], problems):
            found[name] = by_channel["0000"]
    return found


def find(root: Path) -> DataLayout:
    layout = DataLayout(root=root, layout=NAME, label_names=label_names(read_dataset_json(root), root))
    problems = layout.problems
    pair_cases(
        layout,
        by_case(nifti_files(root / "imagesTr", layout.skipped), problems),
        index_by_id(nifti_files(root / "labelsTr", layout.skipped), problems, id_of=strip_nifti_suffix),
        by_case(nifti_files(root / "imagesTs", layout.skipped), problems),
        ("imagesTr/", "labelsTr/"),
    )
    amos.leave_out_mri(layout)  # nnU-Net's Dataset219 (AMOS CT + MRI): its MRI cases
    return layout
