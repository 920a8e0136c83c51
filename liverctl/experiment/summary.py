"""An experiment as one row of `liverctl runs`: its pooled out-of-fold figures, the per-fold best volume
Dice as mean +- std, its decision, and its fold runs beneath. Files only (no torch, numpy or zarr);
whatever is missing or odd becomes a problem line, never an exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liverctl.errors import LiverctlError
from liverctl.experiment.folder import (
    decision_caution,
    fold_dir,
    killed_text,
    read_summary,
    spread_text,
    status_now,
)
from liverctl.plural import agree


def summarize_experiment(exp_dir: str | Path):
    """A `liverctl.runs.summary.RunSummary` with kind "experiment", `folds` (one RunSummary per fold run) and
    `cv` (cv, oof and decision from experiment.json)."""
    from liverctl.printable import one_line
    from liverctl.runs import summary as runs
    from liverctl.runs.history import as_int, dice

    exp_dir = Path(exp_dir)
    out = runs.RunSummary(name=exp_dir.name, path=exp_dir, kind="experiment")
    try:
        summary = read_summary(exp_dir)
    except LiverctlError as exc:
        out.problems.append(str(exc))
        return out
    fold_runs = {f: runs.summarize_run(fold_dir(exp_dir, f)) for f in summary["folds"] if fold_dir(exp_dir, f).is_dir()}
    out.folds = list(fold_runs.values())
    out.preset = summary.get("preset")
    out.settings = experiment_settings(summary)
    out.status = status_now(exp_dir, summary)
    if (killed := killed_text(exp_dir, summary, out.status)) is not None:  # it wrote no last word
        out.problems.append(killed)
    elif out.status not in ("completed", "running"):  # its message says which fold stopped it, and how
        out.ended_because = one_line(summary.get("message"))
    # Per fold, as a run's (the sum over 5 folds of 20 epochs read as one model trained for 100)
    out.fold_epochs = [fold_runs[f].epochs_done if f in fold_runs else 0 for f in summary["folds"]]
    out.epochs_done = min(out.fold_epochs, default=0)
    out.epochs_planned = as_int((summary["config"].get("train") or {}).get("epochs"))
    oof = summary.get("oof") if isinstance(summary.get("oof"), dict) else {}
    out.volume_dice = dice(oof.get("volume_dice"))
    out.slice_dice = dice(oof.get("slice_dice"))
    out.global_dice = dice(oof.get("global_dice"))
    walls = [f.wall_seconds for f in out.folds if f.wall_seconds is not None]
    out.wall_seconds = sum(walls) if walls else None
    out.nan_events = sum(f.nan_events for f in out.folds)
    out.started = summary.get("created") if isinstance(summary.get("created"), (int, float)) else None
    out.updated = summary.get("updated") if isinstance(summary.get("updated"), (int, float)) else None
    out.submissions = runs.read_submissions(exp_dir, out.problems)
    decision = summary.get("decision") if isinstance(summary.get("decision"), dict) else {}
    out.cv = {
        "folds": summary["folds"],
        "cv": summary.get("cv") or {},
        "oof": oof,
        "decision": {k: dice(decision.get(k)) if k.endswith("_dice") else decision.get(k)
                     for k in ("threshold", "post", "volume_dice", "slice_dice", "global_dice", "cases")}
        | {"caution": decision_caution(summary)} if decision else None,
    }
    missing = [f for f in summary["folds"] if not fold_dir(exp_dir, f).is_dir()]
    if missing and out.status == "completed":
        out.problems.append(f"{agree(len(missing), 'fold run folder', 'fold run folders')} missing: "
                            f"{', '.join(f'fold-{f}' for f in missing)}")
    return out


def experiment_settings(summary: dict) -> dict[str, Any]:
    """An experiment's config (experiment.json's) as flat `section.key` settings, as a run's are, without data.fold:
    each fold's own."""
    from liverctl.runs.summary import flatten_config

    settings = flatten_config(summary["config"])
    settings.pop("data.fold", None)
    return settings


def cv_mean(summary) -> float | None:
    """An experiment's mean per-fold best volume Dice (its `folds: best vol` cell, `runs --sort cv_mean`); None
    for a plain run or an experiment without the figure."""
    from liverctl.runs.history import dice

    return dice(((summary.cv or {}).get("cv") or {}).get("mean"))


def cv_text(summary) -> str:
    """`0.8123 +- 0.0100 (3)`: per-fold best volume Dice, mean +- std over the folds that have one; `0.8123 (1)`
    for one fold (`folder.spread_text`)."""
    cv = (summary.cv or {}).get("cv") or {}
    mean, folds = cv_mean(summary), cv.get("folds")
    if mean is None:
        return "-"
    return f"{mean:.4f}{spread_text(cv)} ({len(folds) if isinstance(folds, dict) else '-'})"


def experiment_row_extra(summary, varied: list[str]) -> dict[str, Any]:
    """What an experiment adds to its `--json` row: cv, oof, decision, and its fold rows."""
    from liverctl.runs.table import summary_row

    cv = (summary.cv or {}).get("cv") or {}
    return {
        "kind": "experiment",
        "cv_mean": cv.get("mean"),
        "cv_std": cv.get("std"),
        "cv_folds": cv.get("folds"),
        "oof": (summary.cv or {}).get("oof"),
        "decision": (summary.cv or {}).get("decision"),
        "fold_epochs": summary.fold_epochs,
        "folds": [summary_row(f, varied) for f in summary.folds],
    }
