"""FLARE22 (MICCAI FLARE 2022, abdominal organs) as published, nnU-Net's file names without its folders::

    FLARE22Train/images/FLARE22_Tr_0001_0000.nii.gz   CT, channel 0000
    FLARE22Train/labels/FLARE22_Tr_0001.nii.gz        13 organs: 1 liver, 2 right kidney, ... 13 left kidney

The case id is the name without its channel (`FLARE22_Tr_0001`); a case with other channels is reported, as
for nnU-Net. FLARE ships no file naming its label values: where every case is FLARE22's the layout names its
fixed list (`LABEL_NAMES`, liver 1) and a label holding another value is refused; other FLARE years (FLARE23's
label 14 is a tumour in any organ, FLARE21's 4 organs) name nothing, and ingest asks for `--liver-labels`.
"""

from __future__ import annotations

from pathlib import Path

from liverctl.data.sources.common import DataLayout, index_by_id, nifti_files, pair_cases, strip_nifti_suffix
from liverctl.data.sources.nnunet import by_case

NAME = "flare"
DESCRIPTION = "flare (images/NAME_0000.nii.gz, labels/NAME.nii.gz)"
# another year's files name nothing: ingest asks for --liver-labels with this
LIVER_LABELS_HINT = "FLARE21, 22 and 23: 1 = liver; FLARE23's 14 is a tumour in any organ, not only the liver's"
LABELS_NAMED_BY = "FLARE22's label list"
LABEL_NAMES = {
    1: "liver", 2: "right kidney", 3: "spleen", 4: "pancreas", 5: "aorta", 6: "inferior vena cava",
    7: "right adrenal gland", 8: "left adrenal gland", 9: "gallbladder", 10: "esophagus", 11: "stomach",
    12: "duodenum", 13: "left kidney",
}
_PREFIX = "FLARE22_"


def looks_like(root: Path) -> bool:
    images = nifti_files(root / "images")
    return bool(images) and (root / "labels").is_dir() and any(
        strip_nifti_suffix(p.name).endswith("_0000") for p in images)


def find(root: Path) -> DataLayout:
    layout = DataLayout(root=root, layout=NAME)
    problems, skipped = layout.problems, layout.skipped
    volumes = by_case(nifti_files(root / "images", skipped), problems)
    if volumes and all(case_id.startswith(_PREFIX) for case_id in volumes):
        layout.label_names, layout.labels_named_by = dict(LABEL_NAMES), LABELS_NAMED_BY
    pair_cases(
        layout,
        volumes,
        index_by_id(nifti_files(root / "labels", skipped), problems, id_of=strip_nifti_suffix),
        {},
        ("images/", "labels/"),
    )
    return layout
