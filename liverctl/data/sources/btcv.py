"""BTCV, the Synapse "Multi-Atlas Labeling Beyond the Cranial Vault" abdomen set (RawData.zip), as published::

    RawData/Training/img/img0001.nii.gz      CT
    RawData/Training/label/label0001.nii.gz  13 organs: 1 spleen .. 6 liver .. 13 left adrenal gland
    RawData/Testing/img/img0061.nii.gz       test CT, no label

given as RawData/ or the folder above it (Abdomen/). Volume and label pair by number; the case id is the
volume's name (`img0001`). BTCV ships no file naming its label values: the challenge's list is fixed, so the
layout names them (`LABEL_NAMES`, liver 6), as TotalSegmentator's layout names its liver.nii.gz; a label holding
a value outside that list is refused, asking for `--liver-labels` (a relabelled copy is another dataset).
"""

from __future__ import annotations

from pathlib import Path

from liverctl.data.sources.common import DataLayout, index_by_id, nifti_files, pair_cases, strip_nifti_suffix

NAME = "btcv"
DESCRIPTION = "btcv (Training/img/img0001.nii.gz, Training/label/label0001.nii.gz, Testing/img/)"
LABELS_NAMED_BY = "BTCV's label list"
LABEL_NAMES = {
    1: "spleen", 2: "right kidney", 3: "left kidney", 4: "gallbladder", 5: "esophagus", 6: "liver", 7: "stomach",
    8: "aorta", 9: "inferior vena cava", 10: "portal vein and splenic vein", 11: "pancreas",
    12: "right adrenal gland", 13: "left adrenal gland",
}
_WRAPPER = "RawData"


def _base(root: Path) -> Path | None:
    """The folder holding Training/img/: `root`, or its RawData/ (the folder above the data given)."""
    return next((base for base in (root, root / _WRAPPER) if (base / "Training" / "img").is_dir()), None)


def _case_id(name: str) -> str:
    """`img0001.nii.gz` and `label0001.nii.gz` -> `img0001`."""
    stem = strip_nifti_suffix(name)
    return "img" + stem[len("label"):] if stem.lower().startswith("label") else stem


def looks_like(root: Path) -> bool:
    base = _base(root)
    return base is not None and any(p.name.lower().startswith("img") for p in nifti_files(base / "Training" / "img"))


def find(root: Path) -> DataLayout:
    layout = DataLayout(root=root, layout=NAME, label_names=dict(LABEL_NAMES), labels_named_by=LABELS_NAMED_BY)
    base = _base(root) or root
    problems, skipped = layout.problems, layout.skipped
    pair_cases(
        layout,
        index_by_id(nifti_files(base / "Training" / "img", skipped), problems, id_of=_case_id),
        index_by_id(nifti_files(base / "Training" / "label", skipped), problems, id_of=_case_id),
        index_by_id(nifti_files(base / "Testing" / "img", skipped), problems, id_of=_case_id),
        ("Training/img/", "Training/label/"),
    )
    return layout
