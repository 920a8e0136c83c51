"""A label volume -> its liver mask: the one rule that ingest, evaluate and postprocess share.

1. Label values are whole numbers. A float label (saved as float32 or float16 by a resampling pipeline, or
   scaled by the header's scl_slope / scl_inter) is read as the whole numbers its values lie within
   `LABEL_TOLERANCE` of: 0.99999 (float16, a scale factor) is 1, 1e-4 is 0. A label holding values farther
   from any whole number is refused, in one line naming the file and those values: it was interpolated
   (linear resampling gives 0.5 on a border) or is a probability map, not a label map, and thresholding it
   here would silently decide what the liver is (`integer_labels`).
   A label whose values go down to air's -1000 is a CT volume given in its place, and refused too.
2. Liver is membership in the liver labels; without them, any value > 0 (`liver_from_labels`).

`read_liver_mask` is both, for a NIfTI file (evaluate, postprocess); ingest applies the same two steps to its
label (`integer_labels` when it reads the case, `liver_from_labels` slab by slab as it writes the store), and
records the rule's version in the case's attributes (`LABEL_RULE_ATTR`). Ingest before the rule compared float
values exactly (0.99999 under --liver-labels 1: no liver; a background of 1e-4 without them: all liver); a
rerun builds again a case without the record whose label file may hold such values (`fractional_label_reason`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.errors import LiverctlError
from liverctl.plural import agree
from liverctl.printable import one_line, quoted

# Distance from a whole number within which a float label value is that number. float32 arithmetic on
# labels (a scale factor, 1 / 255 * 255) is off by about 1e-7 x the value, float16 holds every whole number
# up to 2048 exactly; linear interpolation gives fractions everywhere on a border, most of them far beyond this.
LABEL_TOLERANCE = 1e-3
_Z_BLOCK = 16  # slices checked at a time: the temporary copies stay small beside the volume
CT_AIR = -1000  # HU: a label value this low is a CT's (air, or the -1024 / -3024 outside the scan field)

# Case attribute: the version of this rule a stored liver mask was made by (absent: by exact comparison).
LABEL_RULE_ATTR = "label_rule"
LABEL_RULE = 1


# Label values are whole numbers from 0 (background) up, and no NIfTI integer holds more than a uint64: a liver
# label outside 0 .. LIVER_LABEL_MAX is in no label map (--liver-labels -1 scored against no liver, exit 0).
LIVER_LABEL_MAX = 2**64 - 1


def label_value_problem(value: Any) -> str | None:
    """Why `value` is no label value (a whole number from 0, the background, to LIVER_LABEL_MAX), in words; None
    for one. A bool, a float (1.0 too: JSON writes a label value as an integer) or a text is none."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return f"{_shown(value)} is not an integer"
    if not 0 <= value <= LIVER_LABEL_MAX:
        return (f"no label map holds {_shown(value)}; label values are whole numbers from 0 (background) to "
                f"{LIVER_LABEL_MAX} (the most a NIfTI integer holds)")
    return None


def check_liver_labels(values: Sequence[Any], given: str) -> list[int]:
    """`values` as a list of ints, or LiverctlError (one line starting with `given`: the option as given, or what
    names them) for one that no label map holds, or 0: the background is no liver label (--liver-labels 0 took
    every voxel outside the labelled structures as liver, exit 0). The one rule for liver labels, whoever gives
    them: ingest's, evaluate's and postprocess's --liver-labels, a dataset.json's names, a store's record."""
    for value in values:
        problem = label_value_problem(value)
        if problem is None and value == 0:
            problem = ("0 is the background of a label map (every voxel outside the labelled structures), not "
                       "liver; give the values that mean liver (--liver-labels), e.g. 1 (LiTS: 1,2, liver and tumour)")
        if problem is not None:
            raise LiverctlError(f"{one_line(given, 120)}: {problem}")  # ours and their values: cut with "…"
    return [int(v) for v in values]


def _shown(value: Any) -> str:
    """A label value as a message quotes it (`printable.quoted`), numpy's as the number it holds (not np.int64(3))."""
    return quoted(value.item() if isinstance(value, np.generic) else value, 30)


def check_type_holds_liver(img, liver_labels: Sequence[int] | None, path: Path) -> None:
    """LiverctlError naming `path` when the label file's integer type (unscaled: `fractional_label_reason`) holds
    none of `liver_labels`: its liver mask is empty whatever its voxels (--liver-labels 256 on a uint8 label
    scored against no liver). From the header alone."""
    if not liver_labels or fractional_label_reason(img) is not None:
        return
    dtype = img.get_data_dtype()
    if dtype.kind not in "iu":
        return
    info = np.iinfo(dtype)
    if not any(info.min <= int(v) <= info.max for v in liver_labels):
        shown = ",".join(map(str, liver_labels[:5])) + (",..." if len(liver_labels) > 5 else "")
        raise LiverctlError(f"holds {dtype} label values ({info.min} to {info.max}): none of the liver labels "
                            f"{shown} can be among them; which values mean liver in it (--liver-labels)?", path=path)


def fractional_label_reason(img) -> str | None:
    """Why a label file's values may read as other than whole numbers, from its header alone (no voxel is read):
    float-typed on disk, or scaled by scl_slope / scl_inter; None for an unscaled integer label, which every
    rule reads alike."""
    from liverctl.data.nifti import header_scaling

    dtype = img.get_data_dtype()
    if dtype.kind == "f":
        return f"{dtype} on disk"
    slope, inter = header_scaling(img)
    if (slope, inter) != (1.0, 0.0):
        return f"scaled by its header's scl_slope {slope:g} and scl_inter {inter:g}"
    return None


def integer_labels(data: np.ndarray, path: Path, scaling: tuple[float, float] | None = None) -> np.ndarray:
    """`data` as whole-number label values: an integer array as it is; a float one within `LABEL_TOLERANCE`
    of whole numbers as the smallest integer type holding them (a new array); otherwise LiverctlError naming
    `path` and the values. `scaling`: the (scl_slope, scl_inter) the voxels were read with, named in the
    error when they are not (1, 0). Shape: (X, Y, Z) (any with at least one axis), kept."""
    if data.dtype.kind in "iub":
        if data.dtype.kind == "i" and data.size:
            _refuse_hounsfield(float(data.min()), path)
        return data
    if data.dtype.kind != "f":
        raise LiverctlError(f"holds {data.dtype} voxels, not label values", path=path)
    if data.size == 0:
        return data.astype(np.uint8)
    low, high = float(data.min()), float(data.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise LiverctlError("holds non-finite label values (NaN or inf); a label map holds whole numbers", path=path)
    _refuse_hounsfield(low, path)
    if max(abs(low), abs(high)) >= 2**31:
        raise LiverctlError(f"holds label values up to {max(abs(low), abs(high)):g}: not a label map", path=path)
    out = np.empty(data.shape, dtype=np.result_type(np.min_scalar_type(round(low)), np.min_scalar_type(round(high))))
    far_count, far_values, more = 0, np.empty(0, dtype=data.dtype), False
    for z0 in range(0, data.shape[-1], _Z_BLOCK):
        slab = data[..., z0 : z0 + _Z_BLOCK]
        whole = np.rint(slab)
        far = np.abs(slab - whole) > LABEL_TOLERANCE
        if far.any():
            far_count += int(np.count_nonzero(far))
            distinct = np.unique(np.concatenate([far_values, slab[far]]))
            far_values, more = distinct[:5], more or distinct.size > 5
        elif not far_count:
            out[..., z0 : z0 + _Z_BLOCK] = whole
    if far_count:
        shown = ", ".join(f"{v:.4g}" for v in far_values.tolist()) + (", ..." if more else "")
        scaled = ""
        if scaling is not None and tuple(float(s) for s in scaling) != (1.0, 0.0):
            scaled = f", as scaled by its header's scl_slope {scaling[0]:g} and scl_inter {scaling[1]:g}"
        raise LiverctlError(
            f"holds {far_count} label voxels farther than {LABEL_TOLERANCE:g} from any whole number (values "
            f"{shown}{scaled}): an interpolated (linear) resampling or a probability map, not a label map; "
            "resample the labels with nearest neighbour (or threshold the probabilities) and give it again",
            path=path,
        )
    return out


def _refuse_hounsfield(low: float, path: Path) -> None:
    """A 'label' with values down to air's -1000 HU is a CT volume given where its label belongs (folders swapped,
    --labels at the images): every value > 0, bone and soft tissue, was taken as liver without a word."""
    if low <= CT_AIR:
        raise LiverctlError(
            f"holds values down to {low:g}, as a CT in Hounsfield units does (air {CT_AIR}), not a label map: "
            "is it the image rather than its label?",
            path=path,
        )


def liver_from_labels(labels: np.ndarray, liver_labels: Sequence[int] | None) -> np.ndarray:
    """bool mask, same shape: where `labels` (whole numbers, `integer_labels`) is one of `liver_labels`; None or
    empty: any value > 0. One comparison per liver value (SIMD in numpy): about 4x faster than a lookup table's
    gather or `np.isin` on a 512 x 512 x 64 case."""
    if not liver_labels:
        return labels > 0
    values = [int(v) for v in liver_labels]
    liver = labels == values[0]
    for value in values[1:]:
        liver |= labels == value
    return liver


def read_liver_mask(path: str | os.PathLike, liver_labels: Sequence[int] | None = None) -> tuple[Any, np.ndarray]:
    """(the nibabel image, its bool (X, Y, Z) liver mask), voxel order as stored (no reorientation); the
    header is checked before any voxel is read (`liverctl.data.nifti.read_nifti`). An Analyze / NIfTI pair
    (NAME.hdr + NAME.img) is read too."""
    from liverctl.data.nifti import header_scaling, read_nifti

    path = Path(path)
    img, data = read_nifti(path, pairs=True)
    check_type_holds_liver(img, liver_labels, path)
    return img, liver_from_labels(integer_labels(data, path, header_scaling(img)), liver_labels)


def no_liver_note(path: str | os.PathLike, liver_labels: Sequence[int], outcome: str) -> str | None:
    """What to say of a label whose liver, by `liver_labels`, is empty while it holds other values (`evaluate
    --liver-labels 2` on labels of 0/1 scored every case 0.0000 without a word; postprocess wrote an empty mask):
    '<path>: holds label value 1, none of the liver labels 2: <outcome>'. None where the label holds nothing but 0.
    Reads the file again: call it in that rare case only (a liver mask that came out empty)."""
    from liverctl.data.conversion import label_values
    from liverctl.data.nifti import header_scaling, read_nifti

    path = Path(path)
    img, data = read_nifti(path, pairs=True)
    values, _ = label_values(integer_labels(data, path, header_scaling(img)))
    held = [str(int(v)) for v in values if v != 0]
    if not held:
        return None
    shown = ", ".join(held[:8]) + (", ..." if len(held) > 8 else "")
    return (f"{path}: holds label {agree(len(held), 'value', 'values')} {shown}, none of the liver labels "
            f"{','.join(str(int(v)) for v in liver_labels)}: {outcome}")
