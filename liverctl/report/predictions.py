"""The report's predictions: a run's validation cases (`liverctl.runs.validation_cases`, as training and
`submit` choose them) predicted with its checkpoint, scored, and drawn where the liver is and where prediction and label disagree."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from liverctl.errors import LiverctlError
from liverctl.plural import plural
from liverctl.report.plots import plot_overlay
from liverctl.report.run_data import RunData
from liverctl.runs.folder import checkpoint_path


@dataclass
class CaseResult:
    """One validation case predicted for the report: its volume Dice, overlay picture and slices drawn."""

    case: str
    dice: float
    overlay: Path | None = None
    slices: list[int] = field(default_factory=list)


@dataclass
class RunPredictions:
    """The validation cases of one run as predicted for the report, and how they were predicted."""

    cases: list[CaseResult]
    how: str
    warning: str | None = None  # e.g. a run that does not record its training cases: scored unchecked


class OverlaySkipped(Exception):
    """Why a run's prediction pictures could not be drawn (said in index.html, not raised at the user).

    `refused`: an input was there but could not be used (a checkpoint refused or broken, a store whose
    contents do not fit): the report is still written, and `liverctl report` then exits non-zero. Not
    refused: nothing to predict with yet (no checkpoint, no store, no torch): a plain skip.
    """

    def __init__(self, reason: str, *, refused: bool = False):
        super().__init__(reason)
        self.refused = refused


@dataclass
class _Inputs:
    """What predicting a run needs: the store, the loaded model, and the run's inference settings."""

    store: object
    store_path: Path
    model: object
    which: str
    device: str


def predict_validation_cases(
    run: RunData,
    out_dir: Path,
    *,
    store_path: str | os.PathLike | None,
    max_cases: int,
    slices_per_case: int,
    device: str,
) -> RunPredictions:
    """Predict up to `max_cases` of the validation cases of `run` (`liverctl.runs.validation_cases`), draw
    their overlays into `out_dir` and return each case's volume Dice.

    Predictions use the run's best checkpoint (else its last), its `infer.tta` and `infer.threshold`,
    and no post-processing: what the model itself sees. Raises OverlaySkipped, with the reason, when the
    checkpoint, the store or the inference code is missing.
    """
    from liverctl.runs.validation_cases import checked_validation_cases

    inputs = _open_inputs(run, store_path, device)
    cfg = inputs.model.cfg
    try:
        case_ids, unchecked = checked_validation_cases(cfg, inputs.model.cases, inputs.store, inputs.model.checkpoint)
    except LiverctlError as exc:  # no case in the fold, or cases the run trained on: scores that would mislead
        raise OverlaySkipped(f"store {inputs.store_path}: {exc}", refused=True) from None
    case_ids = case_ids[:max_cases]
    infer = cfg.get("infer", {})
    threshold, tta = float(infer.get("threshold", 0.5)), str(infer.get("tta", "none"))
    how = (f"checkpoint {inputs.which}.pt, {plural(len(case_ids), 'case')} of validation fold {cfg['data']['fold']} from "
           f"{inputs.store_path}, TTA {tta}, threshold {threshold:g}, no post-processing, on {inputs.device}")
    if unchecked is not None:
        how += f"; warning: {unchecked}"
    from liverctl.infer.predict import predict_cases

    results = []
    try:
        for case, probs in predict_cases([inputs.model], inputs.store, case_ids, tta=tta,
                                         batch_size=int(infer.get("batch_size", 16)), device=inputs.device):
            results.append(_score_and_draw(run, inputs, case, probs >= threshold, out_dir=out_dir,
                                           k=slices_per_case))
    except (LiverctlError, RuntimeError, ValueError) as exc:
        raise OverlaySkipped(f"prediction failed: {_one_line(exc)}", refused=True) from None
    return RunPredictions(results, how, unchecked)


def _open_inputs(run: RunData, store_path: str | os.PathLike | None, device: str) -> _Inputs:
    which = next((w for w in ("best", "last") if checkpoint_path(run.path, w).is_file()), None)
    if which is None:
        raise OverlaySkipped("no checkpoints/best.pt or last.pt to predict with")
    try:
        from liverctl.data.store import LiverStore
        from liverctl.device import resolve_device
        from liverctl.experiment.ensemble import fold_owners, load_checked_runs
        from liverctl.runs.folder import run_store
    except ImportError as exc:  # e.g. a listing-only install without torch
        raise OverlaySkipped(f"prediction needs {exc.name or exc}, which cannot be imported") from None
    device = str(resolve_device(device))  # a device that is not there is the user's error, not a skip
    if store_path is None:
        try:
            store_path = run_store(run.summary.settings.get("data.store", "store/liver.zarr"), run.path)
        except LiverctlError as exc:
            raise OverlaySkipped(_one_line(exc)) from None
    store_path = Path(store_path)
    if not store_path.exists():
        raise OverlaySkipped(f"store {store_path} not found (pass --store)")
    try:
        store = LiverStore.open(store_path)
        # a fold run of an experiment is checked against it as `submit --run EXPERIMENT` checks it
        (run_model,) = load_checked_runs([run.path], which, device, fold_owners([run.path]))
    except (LiverctlError, RuntimeError) as exc:  # RuntimeError: torch, e.g. weights not matching the model
        raise OverlaySkipped(_one_line(exc), refused=True) from None
    return _Inputs(store, store_path, run_model, which, device)


def _score_and_draw(run: RunData, inputs: _Inputs, case: str, pred, *, out_dir: Path, k: int) -> CaseResult:
    """Volume Dice of one predicted case, and its overlay of `k` slices (`disagreeing_slices`)."""
    from liverctl.metrics import DiceCounts, slice_counts

    store = inputs.store
    label = store.read_label_volume(case) > 0
    counts = slice_counts(pred, label)  # (Z, 3): tp, fp, fn per slice
    dice = DiceCounts()
    dice.add_slices(case, counts)
    zs = disagreeing_slices(counts, k)
    window = inputs.model.cfg["data"].get("window", (-100.0, 200.0))
    path = plot_overlay(
        out_dir / f"{safe_name(case)}.png", case, zs,
        images=[store.read_slice(case, z) for z in zs], labels=[label[..., z] for z in zs],
        preds=[pred[..., z] for z in zs], window=(float(window[0]), float(window[1])),
        affine=store.meta(case).get("affine"), title=f"{run.name} / {case}: volume Dice {dice.volume_dice():.4f}",
    )
    return CaseResult(case, dice.volume_dice(), path, zs)


def _one_line(exc: BaseException) -> str:
    from liverctl.data.nifti import short_error

    return str(exc) if isinstance(exc, LiverctlError) else short_error(exc)


def disagreeing_slices(counts, k: int) -> list[int]:
    """`k` slices to draw of a case, in z order: the one with the most liver (the label's), so that the
    picture shows the organ, then the slices with the most disagreeing pixels (fp + fn); where fewer
    slices disagree at all, the slices with the most liver fill the rest.

    Chosen by disagreement alone, a model that marked false liver in the pelvis showed a real case as
    pelvis slices only (totalseg-example: z 11 and 12, no liver in them, and z 76 with 51 px of it).

    Shape: counts (Z, 3) = per-slice (tp, fp, fn).
    """
    rows = [(int(fp) + int(fn), int(tp) + int(fn), z) for z, (tp, fp, fn) in enumerate(counts.tolist())]
    by_liver = sorted(rows, key=lambda r: (-r[1], r[2]))
    chosen = {by_liver[0][2]} if k > 0 and by_liver and by_liver[0][1] > 0 else set()
    wrong = sorted((r for r in rows if r[0] > 0 and r[2] not in chosen), key=lambda r: (-r[0], r[2]))
    chosen.update(r[2] for r in wrong[: k - len(chosen)])
    chosen.update([r[2] for r in by_liver if r[2] not in chosen][: k - len(chosen)])
    return sorted(chosen)


def safe_name(case: str) -> str:
    """A file name for a case or run id (anything but letters, digits and - _ . becomes _)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case) or "case"
