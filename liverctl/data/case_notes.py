"""What ingest says of a case, from the case's attributes alone: the run that builds the case and every rerun
that finds it unchanged say the same lines, the rerun from the store (no NIfTI file is opened again).

A rerun that rebuilt nothing said only the HU note (`conversion.intensity_note`, from the stored statistics):
a case whose mask may lie flipped against its image (a qform and sform that disagree, a label on another grid)
looked clean the second time. So the build records what it found in the headers and the label, and the notes
are made from that record here, for both:

    header_fixes, label_header_fixes         what nibabel fixed in each file's header as it read it
    qform_difference, label_qform_difference  how a header's qform places the voxels otherwise than its sform
                                              (`nifti.qform_sform_difference`); null where they agree
    label_grid_difference                    how the label's affine places them otherwise than its volume's
                                              (`nifti.grid_difference`); null where they agree or the label
                                              says nothing of where it lies
    axes                                     where the volume's axes point (`nifti.axis_codes` of its affine:
                                              'LPS'); null where the affine is singular
    label_values                             the label's distinct values, the first LABEL_VALUES_KEPT of them
                                              (more than LABEL_VALUES_SHOWN: more than a note shows), and
    labelled_voxels                          its voxels other than 0; both only where the build counted them
                                              (no --liver-labels, a dataset.json's names, or no liver found)

A case stored before these attributes gets the HU note alone, as before; ingest it into a new store to have
the others. Making the notes costs a rerun next to nothing, about 10 us a case with the HU note (`axes` is
recorded rather than worked out again from the affine by nibabel: 0.16 ms a case, 16 ms of a 100-case rerun of
about 90 ms).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liverctl.data.conversion import intensity_note

AXES = "axes"
HEADER_FIXES = "header_fixes"  # prefixed with "label_" for the label file's
QFORM_DIFFERENCE = "qform_difference"
LABEL_GRID_DIFFERENCE = "label_grid_difference"
LABEL_VALUES = "label_values"
LABELLED_VOXELS = "labelled_voxels"
LABEL_VALUES_SHOWN = 8
LABEL_VALUES_KEPT = LABEL_VALUES_SHOWN + 1  # one more: whether there are more than a note shows


def case_notes(attrs: dict[str, Any], volume: Path, label: Path | None) -> list[str]:
    """The notes on a case (its attributes `attrs`, as stored or as its build wrote them), one line each, naming
    `volume` and `label` (the files as found now). Order: the volume's header, its label's, the label's values,
    the volume's intensities."""
    notes = _header_notes(attrs, "", volume)
    if AXES in attrs and attrs[AXES] is None:  # ingested all the same; nothing downstream orients by it
        notes.append(f"{volume}: the header's affine is singular (an axis has no direction, a damaged sform or "
                     "qform); the voxels went in as stored, of unknown orientation (the report draws them unrotated)")
    if label is not None:
        notes += _header_notes(attrs, "label_", label)
        if isinstance(difference := attrs.get(LABEL_GRID_DIFFERENCE), str):
            notes.append(f"{label}: the label's affine {difference} ({volume.name}); its voxels were paired with the "
                         "volume's as stored, index for index. If the label was resampled or reoriented on its own, "
                         "put it back on the volume's grid and ingest again")
        if note := _label_values_note(attrs, label):
            notes.append(note)
    if note := intensity_note(attrs.get("stats"), volume, attrs.get("scaling")):
        notes.append(note)
    if label is not None and (note := _no_liver_label_note(attrs, label)):
        notes.append(note)
    return notes


def _header_notes(attrs: dict[str, Any], prefix: str, path: Path) -> list[str]:
    fixes = attrs.get(prefix + HEADER_FIXES)
    notes = [f"{path}: nibabel fixed the header as it read it: {fix}"
             for fix in (fixes if isinstance(fixes, list) else []) if isinstance(fix, str)]
    if isinstance(difference := attrs.get(prefix + QFORM_DIFFERENCE), str):
        notes.append(f"{path}: the header's qform and sform disagree: its qform {difference}; read by the sform, as "
                     "nibabel does (tools that read the qform, as ITK-based ones have, place it otherwise: a mask "
                     "made in one may lie flipped or shifted against its image in the other)")
    return notes


def label_value_attrs(values: Any, counts: Any) -> dict[str, Any]:
    """The attributes recording a label's distinct values (`conversion.label_values`: sorted, with their voxel
    counts) for its notes."""
    return {LABEL_VALUES: [int(v) for v in values[:LABEL_VALUES_KEPT].tolist()],
            LABELLED_VOXELS: int(counts[values != 0].sum())}


def _shown_values(values: list[int]) -> str:
    return ", ".join(map(str, values[:LABEL_VALUES_SHOWN])) + (", ..." if len(values) > LABEL_VALUES_SHOWN else "")


def _recorded_values(attrs: dict[str, Any]) -> list[int] | None:
    values = attrs.get(LABEL_VALUES)
    if isinstance(values, list) and values and all(type(v) is int for v in values):
        return values
    return None


def _label_values_note(attrs: dict[str, Any], path: Path) -> str | None:
    """Say so when a label holds values other than 0/1 and every value > 0 was taken as liver (no liver labels)."""
    values = _recorded_values(attrs)
    if values is None or attrs.get("liver_labels") is not None or (values[0] >= 0 and values[-1] <= 1):
        return None  # sorted and whole: two values at most, both 0 or 1, else one of them is not
    return (
        f"{path}: label values {_shown_values(values)}; without --liver-labels every value > 0 was taken as liver "
        f"({attrs.get('liver_voxels')} voxels). If only some mean liver, ingest again with e.g. --liver-labels 1"
    )


def _no_liver_label_note(attrs: dict[str, Any], path: Path) -> str | None:
    """Say so when a label marks structures but none with a liver value: the case went in without liver, which is
    right only if it has none (not so under --liver-labels meant for another dataset)."""
    values, liver_labels = _recorded_values(attrs), attrs.get("liver_labels")
    labelled = attrs.get(LABELLED_VOXELS)
    if values is None or not isinstance(liver_labels, list) or attrs.get("liver_voxels") != 0 or not labelled:
        return None
    return (
        f"{path}: no voxel holds a liver label ({','.join(map(str, liver_labels))}) though {labelled} voxels are "
        f"labelled (label values {_shown_values(values)}); the case was ingested without liver. If that is wrong, "
        "ingest again with the --liver-labels this source uses"
    )
