"""`liverctl report`: a folder to open in a browser, with the pictures that judge one or more runs.

- `curves.png` (`report/plots.py`): loss per step (NaN events marked), the three Dice figures per epoch,
  learning rate per step, train/val loss per epoch. Drawn from `events.jsonl` only, so it needs no torch.
  Several runs share the axes, one colour per run.
- `case_dice.png` and `overlays/<run>/<case>.png` (`report/predictions.py`): volume Dice of each
  validation case, and image, label and prediction on the slice with the most liver and those where label
  and prediction disagree most (`predictions.disagreeing_slices`), with a legend of the colours. These need
  the run's checkpoint and the store; when either is missing the report still renders the curves and
  says in `index.html` what was skipped and why.
- `index.html` (`report/html.py`): the runs table, the pictures and each run's config.

The report is built in a hidden folder beside `out_dir` and renamed into place (this module), so a report
that exists is complete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from liverctl.disk import NOT_WRITABLE, is_disk_full, no_space_error
from liverctl.errors import LiverctlError
from liverctl.files import check_no_dangling_link, is_work_dir, staged_folder
from liverctl.report.html import write_index
from liverctl.report.plots import CURVES_FIGSIZE, DPI, plot_case_dice, plot_curves
from liverctl.report.predictions import (
    CaseResult,
    OverlaySkipped,
    RunPredictions,
    predict_validation_cases,
    safe_name,
)
from liverctl.report.run_data import RunData, load_run

__all__ = ["CURVES_FIGSIZE", "DPI", "ReportResult", "default_out_dir", "load_run", "write_report"]

REPORT_MARKER = ".liverctl-report"  # marks a folder that `report` may replace


@dataclass
class ReportResult:
    out_dir: Path
    index_html: Path
    images: list[Path]
    skipped: list[str]
    cases: dict[str, list[CaseResult]] = field(default_factory=dict)  # run name -> predicted cases
    refused: list[str] = field(default_factory=list)  # the skips caused by an input that could not be used
    warnings: list[str] = field(default_factory=list)  # predicted, with a caveat (`RunPredictions.warning`)


def default_out_dir(run_dirs: list[Path]) -> Path:
    """RUN/report for one run; reports/<a>+<b>... beside the runs folder for several."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / "report"
    names = "+".join(Path(d).name for d in run_dirs)
    if len(names) > 100:
        names = f"{Path(run_dirs[0]).name}+{len(run_dirs) - 1}-more"
    return Path(run_dirs[0]).parent.parent / "reports" / names


def write_report(
    run_dirs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    overlays: bool = True,
    store_path: str | os.PathLike | None = None,
    max_cases: int = 6,
    slices_per_case: int = 3,
    device: str = "auto",
    experiments: list[str | os.PathLike] = (),
    on_start: Callable[[], None] | None = None,
) -> ReportResult:
    """Write the report folder for `run_dirs` into `out_dir` (replaced whole if it exists); `experiments`
    (whose fold runs are among `run_dirs`) add their fold and out-of-fold option tables. `on_start()` is called
    once the runs and `out_dir` were found fit, before the work (`liverctl report` says what it will take)."""
    if not run_dirs:
        raise LiverctlError("no run given")
    data = [load_run(d) for d in run_dirs]
    names = [d.name for d in data]
    if len(set(names)) != len(names):
        raise LiverctlError(f"two runs share a name ({', '.join(names)}); give distinct run folders")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)  # before minutes of prediction, and again just before the swap
    with contextlib.ExitStack() as stack:
        stack.enter_context(_disk_full_in_one_line(out_dir))  # left last: after the staging folder is gone
        try:
            work = stack.enter_context(staged_folder(out_dir, replace=True))
        except OSError as exc:  # a run attached read-only (/kaggle/input): not the temporary folder's name
            if exc.errno not in NOT_WRITABLE:
                raise
            raise LiverctlError(f"cannot write the report there ({exc.strerror or exc}); give --out a folder you "
                                "can write to", path=out_dir) from None
        if on_start is not None:
            on_start()
        images = [plot_curves(data, work / "curves.png")]
        skipped: list[str] = []
        refused: list[str] = []
        predictions: dict[str, RunPredictions] = {}
        if overlays:
            options = dict(store_path=store_path, max_cases=max_cases, slices_per_case=slices_per_case,
                           device=device)
            predictions = _predict_runs(data, work, skipped, refused, options)
            images.extend(c.overlay for p in predictions.values() for c in p.cases if c.overlay is not None)
        else:
            skipped.append("prediction overlays and per-case Dice: turned off (--no-overlays)")
        cases = {name: p.cases for name, p in predictions.items()}
        if any(cases.values()):
            images.insert(1, plot_case_dice(cases, work / "case_dice.png"))
        write_index(data, predictions, skipped, work / "index.html", with_case_dice=any(cases.values()),
                    experiments=experiments)
        (work / REPORT_MARKER).write_text("written by liverctl report; the folder is replaced whole on "
                                          "the next report\n", encoding="utf-8")
        _check_out_dir(out_dir)  # an old report there is moved aside as the block ends, then deleted
    moved = [out_dir / p.relative_to(work) for p in images]
    moved_cases = {
        name: [CaseResult(c.case, c.dice, None if c.overlay is None else out_dir / c.overlay.relative_to(work),
                          c.slices) for c in results]
        for name, results in cases.items()
    }
    warnings = [f"{name}: {p.warning}" for name, p in predictions.items() if p.warning]
    return ReportResult(out_dir, out_dir / "index.html", moved, skipped, moved_cases, refused, warnings)


@contextlib.contextmanager
def _disk_full_in_one_line(out_dir: Path):
    """A full disk while the pictures and pages are written (matplotlib's and the page's own writes) said only 'no
    space left on the disk being written': the line names the report's folder and its disk."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise no_space_error(out_dir, "the report") from None


def _predict_runs(
    data: list[RunData], work: Path, skipped: list[str], refused: list[str], options: dict
) -> dict[str, RunPredictions]:
    """Each run's predicted validation cases; a run that cannot be predicted becomes a line in `skipped`,
    and in `refused` too where an input it needs could not be used (`OverlaySkipped.refused`)."""
    predictions = {}
    for run in data:
        try:
            predictions[run.name] = predict_validation_cases(run, work / "overlays" / safe_name(run.name), **options)
        except OverlaySkipped as exc:
            skipped.append(f"{run.name}: prediction overlays and per-case Dice skipped: {exc}")
            if exc.refused:
                refused.append(f"{run.name}: {exc}")
    return predictions


def _check_out_dir(target: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier report (`--out runs` must not
    delete the runs)."""
    check_no_dangling_link(target, option="--out")
    if not target.exists():
        return
    if not target.is_dir():
        raise LiverctlError("exists and is not a folder; choose another --out", path=target)
    held = [p for p in target.iterdir() if not is_work_dir(p, target)]  # not a report's own staging (under way)
    if held and not (target / REPORT_MARKER).is_file():
        raise LiverctlError("exists and is not a liverctl report; choose another --out (an earlier report "
                            "there would be replaced)", path=target)
