"""Data sources in every layout liverctl knows, built from synthetic volumes and the real CT samples.

`build_sources(root, tiny_dataset)` writes (symlinks where the files are used as they are):

- `comp/`: the tiny synthetic dataset in the competition layout (6 train ids 0-5, 2 test ids 6-7);
- `lits/`: LiTS names in two batch folders: `volume-0` = the real totalseg-example CT with a label of
  liver 1 and a tumour 2 inside it, `volume-1`, `volume-2` = synthetic cases with a tumour 2; and a
  `Test Batch/test-volume-0`;
- `msd/`: a Decathlon folder: `liver_0` = the real totalseg-dicom20 CT, `liver_1` = a synthetic case,
  `imagesTs/liver_9`, a dataset.json naming 1 liver and 2 cancer, and a macOS `._liver_0.nii.gz`;
- `nnunet/`: an nnU-Net raw folder: `dcmqi_0000` = the real dcmqi-3slice CT whose label holds 1 liver
  and 2 spine, and a dataset.json (v2) naming both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from conftest import REAL_DATA


@dataclass
class Sources:
    comp: Path
    lits: Path
    msd: Path
    nnunet: Path


def _link(target: Path, link: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def _save(path: Path, data: np.ndarray, like: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), nib.load(str(like)).affine), str(path))
    return path


def with_tumour(label: np.ndarray) -> np.ndarray:
    """A copy of a 0/1 liver label with a block inside the liver set to 2 (a LiTS tumour)."""
    out = label.astype(np.uint8).copy()
    xs, ys, zs = np.nonzero(out == 1)
    cx, cy, cz = (int(np.median(a)) for a in (xs, ys, zs))
    block = out[cx - 2 : cx + 3, cy - 2 : cy + 3, cz - 1 : cz + 2]
    block[block == 1] = 2
    return out


def build_sources(root: Path, tiny: Path) -> Sources:
    synth_vol, synth_seg = tiny / "train" / "volume", tiny / "train" / "segmentation"
    comp = _link(tiny, root / "comp")

    lits = root / "lits"
    real_ct = REAL_DATA / "totalseg-example" / "ct.nii.gz"
    real_liver = np.asarray(nib.load(str(REAL_DATA / "totalseg-example" / "liver.nii.gz")).dataobj)
    _link(real_ct, lits / "Training Batch 1" / "volume-0.nii.gz")
    _save(lits / "Training Batch 1" / "segmentation-0.nii.gz", with_tumour(real_liver), real_ct)
    for i in (1, 2):
        src = synth_vol / f"volume-{i}.nii.gz"
        _link(src, lits / "Training Batch 2" / f"volume-{i}.nii.gz")
        label = np.asarray(nib.load(str(synth_seg / f"segmentation-{i}.nii.gz")).dataobj)
        _save(lits / "Training Batch 2" / f"segmentation-{i}.nii.gz", with_tumour(label), src)
    _link(tiny / "test" / "volume-6.nii.gz", lits / "Test Batch" / "test-volume-0.nii.gz")

    msd = root / "msd"
    _link(REAL_DATA / "totalseg-dicom20" / "ct.nii.gz", msd / "imagesTr" / "liver_0.nii.gz")
    _link(REAL_DATA / "totalseg-dicom20" / "liver.nii.gz", msd / "labelsTr" / "liver_0.nii.gz")
    _link(synth_vol / "volume-3.nii.gz", msd / "imagesTr" / "liver_1.nii.gz")
    _link(synth_seg / "segmentation-3.nii.gz", msd / "labelsTr" / "liver_1.nii.gz")
    _link(tiny / "test" / "volume-7.nii.gz", msd / "imagesTs" / "liver_9.nii.gz")
    (msd / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (msd / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Liver",
                "labels": {"0": "background", "1": "liver", "2": "cancer"},
                "training": [
                    {"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"}
                    for i in (0, 1)
                ],
                "test": ["./imagesTs/liver_9.nii.gz"],
            }
        )
    )

    nnunet = root / "nnunet"
    _link(REAL_DATA / "dcmqi-3slice" / "ct.nii.gz", nnunet / "imagesTr" / "dcmqi_0000.nii.gz")
    _link(REAL_DATA / "dcmqi-3slice" / "label.nii.gz", nnunet / "labelsTr" / "dcmqi.nii.gz")
    (nnunet / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spine": 2},
                    "numTraining": 1, "file_ending": ".nii.gz"})
    )
    return Sources(comp=comp, lits=lits, msd=msd, nnunet=nnunet)
