"""Score a submission CSV against label volumes: volume, slice and global Dice (DESIGN.md, Metrics).

The label folder defines what must be scored: every `<id>.nii[.gz]` or `segmentation-<id>.nii[.gz]`
in it (or an Analyze / NIfTI pair, `<id>.hdr` + `<id>.img`) is a case, and the submission must hold exactly one row per slice of those cases (the reader in
`liverctl.infer.submission` reports every problem, line by line, otherwise). A label becomes its liver mask by
ingest's rule (`liverctl.data.liver_mask`): whole-number values, liver `label > 0` unless `liver_labels` names
the values (e.g. `[1]` where 2 is another organ).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from liverctl.data.liver_mask import no_liver_note, read_liver_mask
from liverctl.data.sources import case_id_from_name
from liverctl.data.sources.common import nifti_files
from liverctl.disk import NOT_WRITABLE, os_error_behind
from liverctl.errors import LiverctlError
from liverctl.files import natural_key, write_atomic
from liverctl.infer.submission import read_submission
from liverctl.metrics import DiceCounts, dice_from_counts, slice_counts
from liverctl.printable import quoted


@dataclass
class CaseScore:
    case: str
    volume_dice: float  # Dice of this case's 3D volume
    slice_dice: float  # mean Dice of its slices, empty-on-empty = 1
    slices: int
    label_voxels: int
    pred_voxels: int
    tp: int
    fp: int
    fn: int


@dataclass
class Evaluation:
    submission: str
    labels: str
    liver_labels: list[int] | None
    volume_dice: float  # per-case Dice averaged over cases
    slice_dice: float  # per-slice Dice averaged over all slices
    global_dice: float  # pooled over every voxel of every case
    cases: list[CaseScore]
    sha256: str | None = None  # of the CSV scored: `runs` matches scores to the submission that wrote the file
    notes: list[str] = field(default_factory=list)  # a label holding none of `liver_labels` (`liver_mask.no_liver_note`)

    def to_json(self) -> dict:
        def clean(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v

        data = asdict(self)
        data["cases"] = [{k: clean(v) for k, v in c.items()} for c in data["cases"]]
        return {k: clean(v) for k, v in data.items()}


def find_label_files(labels_dir: str | os.PathLike) -> dict[str, Path]:
    """Case id -> label file for every NIfTI (a pair: its .hdr) in the folder (`segmentation-` prefix optional)."""
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        what = "is a file, expected the folder of label volumes" if labels_dir.exists() else "label folder not found"
        raise LiverctlError(what, path=labels_dir)
    found: dict[str, Path] = {}
    for path in nifti_files(labels_dir, pairs=True):  # ingest's rule: macOS `._x.nii.gz` left out, CT.NII.GZ kept
        case = case_id_from_name(path.name)
        if case in found:
            raise LiverctlError(f"two label files for case {quoted(case)}: {found[case].name} and {path.name}", path=labels_dir)
        found[case] = path
    if not found:
        raise LiverctlError("no .nii / .nii.gz / .hdr+.img label volumes in this folder", path=labels_dir)
    return dict(sorted(found.items(), key=lambda item: natural_key(item[0])))


def label_shapes(files: dict[str, Path]) -> dict[str, tuple[int, int, int]]:
    from liverctl.data.nifti import open_nifti, volume_shape

    return {case: volume_shape(open_nifti(path, pairs=True)) for case, path in files.items()}


def evaluate_submission(
    submission: str | os.PathLike,
    labels_dir: str | os.PathLike,
    *,
    liver_labels: Sequence[int] | None = None,
) -> Evaluation:
    """Decode and validate `submission`, then score it case by case against `labels_dir`.

    Raises `MalformedSubmission` (every problem, with lines) if the CSV does not fit the labels' cases.
    """
    files = find_label_files(labels_dir)
    parsed = read_submission(submission, label_shapes(files), header=None)
    counts = DiceCounts()
    scores, notes = [], []
    for case, path in files.items():
        _, label = read_liver_mask(path, liver_labels)
        if liver_labels and not label.any():
            notes += filter(None, [no_liver_note(path, liver_labels, "scored as a case without liver")])
        per_slice = slice_counts(parsed.volume(case), label)
        counts.add_slices(case, per_slice)
        tp, fp, fn = (int(v) for v in per_slice.sum(axis=0))
        scores.append(
            CaseScore(
                case=case,
                volume_dice=dice_from_counts(tp, fp, fn),
                slice_dice=float(np.mean([dice_from_counts(*row) for row in per_slice])),
                slices=len(per_slice),
                label_voxels=tp + fn,
                pred_voxels=tp + fp,
                tp=tp,
                fp=fp,
                fn=fn,
            )
        )
    summary = counts.summary()
    return Evaluation(
        submission=str(submission),
        labels=str(labels_dir),
        liver_labels=list(liver_labels) if liver_labels else None,
        volume_dice=summary["volume_dice"],
        slice_dice=summary["slice_dice"],
        global_dice=summary["global_dice"],
        cases=scores,
        sha256=parsed.sha256,  # of the bytes scored, not a second read that could see another file
        notes=notes,
    )


def scores_path(submission: str | os.PathLike) -> Path:
    """`submission.csv` -> `submission.scores.json` beside it."""
    path = Path(submission)
    return path.with_name(path.stem + ".scores.json") if path.suffix else path.with_name(path.name + ".scores.json")


def write_scores(evaluation: Evaluation, path: str | os.PathLike) -> Path:
    """Write the evaluation as JSON atomically (`liverctl.files.write_atomic`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, json.dumps(evaluation.to_json(), indent=2) + "\n", what="the scores")


def write_scores_beside(evaluation: Evaluation, submission: str | os.PathLike,
                        elsewhere: str | os.PathLike | None = None) -> tuple[Path | None, str | None]:
    """Write the scores beside the CSV (`scores_path`, where `liverctl runs` finds them): (the path, None), or
    for a CSV in a folder that cannot be written (attached read-only, as /kaggle/input is) (None, a note): the
    figures are printed all the same, only the file and what `runs` shows of it are missing. `elsewhere`: the
    `--json FILE` the scores are also saved to, which the note names rather than advising `--json FILE`."""
    path = scores_path(submission)
    try:
        return write_scores(evaluation, path), None
    except LiverctlError as exc:
        cause = os_error_behind(exc)
        if cause is None or cause.errno not in NOT_WRITABLE:
            raise
        why = f"{path}: not saved beside the CSV ({cause.strerror or cause})"
        if elsewhere is not None:
            return None, f"{why}, only in {elsewhere} (`liverctl runs` finds them only beside the CSV)"
        return None, (f"{why}; `--json FILE` saves the scores in a folder you can write to (`liverctl runs` finds "
                      "them only beside the CSV)")
