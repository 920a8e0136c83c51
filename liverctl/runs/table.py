"""The runs table, built once: its columns (`COLUMNS`, plus the settings that differ between the runs
listed), one row of cells per run (`table_rows`), the `--json` / `--csv` records (`summary_row`), and
sorting and filtering. `liverctl runs` renders the cells with rich, `report` as HTML.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Any

from liverctl.errors import LiverctlError
from liverctl.printable import one_line, quoted
from liverctl.runs.events import json_value
from liverctl.runs.history import finite
from liverctl.runs.summary import OWN, STALE, RunSummary
from liverctl.suggest import did_you_mean

# Settings that differ between runs without changing what a run learns: not worth a column.
IGNORED_SETTINGS = ("description", "preset", "data.store", "data.num_workers", "train.log_every",
                    "infer.batch_size")


@dataclass(frozen=True)
class Column:
    """One column of the table: `key` for --sort/--filter, `header` as shown, `value` the raw value of a
    run (sorting, filtering), `text` the cell as shown."""

    key: str
    header: str
    value: Callable[[RunSummary], Any]
    text: Callable[[RunSummary], str]
    numeric: bool = False


def _dice_column(key: str, header: str) -> Column:
    return Column(key, header, attrgetter(key), lambda s: format_dice(getattr(s, key)), True)


def setting_column(key: str) -> Column:
    """A column for a dotted config key (`loss.name`)."""
    return Column(key, key, lambda s: s.settings.get(key), lambda s: format_setting(s.settings.get(key)))


# Table columns besides the varied settings (which come after `preset`), in display order.
COLUMN_SPEC = (
    Column("name", "run", attrgetter("name"), attrgetter("name")),
    Column("preset", "preset", attrgetter("preset"), lambda s: s.preset or "-"),
    Column("status", "status", attrgetter("status"), attrgetter("status")),
    Column("nan", "NaN", attrgetter("nan_events"), lambda s: str(s.nan_events), True),
    Column("epochs", "epochs", attrgetter("epochs_done"), lambda s: epochs_text(s), True),
    Column("best_epoch", "best epoch", attrgetter("best_epoch"),
           lambda s: "-" if s.best_epoch is None else str(s.best_epoch), True),
    _dice_column("volume_dice", "vol Dice"),
    _dice_column("slice_dice", "slice"),
    _dice_column("global_dice", "global"),
    Column("wall", "wall", attrgetter("wall_seconds"), lambda s: format_duration(s.wall_seconds), True),
    Column("submitted", "submitted", attrgetter("best_submitted"), lambda s: submitted_text(s), True),
)
# Not shown, but a key to sort and filter by (the default order: newest first).
STARTED = Column("started", "started", attrgetter("started"), lambda s: str(s.started), True)


def _cv_mean(summary: RunSummary) -> float | None:
    from liverctl.experiment.summary import cv_mean

    return cv_mean(summary)


# An experiment's `folds: best vol` (`liverctl.commands.runs` shows it): its mean, to sort and filter experiments by
CV_MEAN = Column("cv_mean", "folds: best vol", _cv_mean, lambda s: format_dice(_cv_mean(s)), True)
COLUMNS = tuple(c.key for c in COLUMN_SPEC)
_BY_KEY = {c.key: c for c in (*COLUMN_SPEC, STARTED, CV_MEAN)}


def columns(varied: list[str]) -> list[Column]:
    """The columns shown: name, preset, the varied settings, then the rest."""
    return [*COLUMN_SPEC[:2], *(setting_column(k) for k in varied), *COLUMN_SPEC[2:]]


def cells(summary: RunSummary, varied: list[str]) -> list[str]:
    """One row of the table as text, in `columns(varied)` order."""
    return [c.text(summary) for c in columns(varied)]


def table_rows(summaries: list[RunSummary]) -> list[RunSummary]:
    """The rows in order: each summary, an experiment's fold runs right after it (named `  exp/fold-k`)."""
    rows = []
    for s in summaries:
        rows.append(s)
        rows.extend(replace(fold, name=f"  {s.name}/{fold.name}") for fold in s.folds)
    return rows


def epochs_text(s: RunSummary) -> str:
    """`12/20`: epochs done of those planned; an experiment's per fold, after its number of folds: `5x20/20`, or
    `5x0-20/20` while its folds stand apart (`RunSummary.fold_epochs`)."""
    planned = "?" if s.epochs_planned is None else s.epochs_planned
    if s.kind != "experiment":
        return f"{s.epochs_done}/{planned}"
    low, high = min(s.fold_epochs, default=0), max(s.fold_epochs, default=0)
    return f"{len(s.fold_epochs)}x{low if low == high else f'{low}-{high}'}/{planned}"


def submitted_text(s: RunSummary) -> str:
    """The best evaluated volume Dice of the submissions of the run's checkpoint alone (and how many), else of an
    ensemble it was part of (`(ens N)`: N runs), else how many are unscored; `stale` when every submission was
    made with a checkpoint since replaced (their scores are of weights no longer there, and not shown)."""
    current = [sub for sub in s.submissions if sub.get("made_with", OWN) != STALE]
    if not current:
        return "stale" if s.submissions else "-"
    own = [sub for sub in current if sub.get("made_with", OWN) == OWN]
    if s.best_submitted is not None:
        return f"{s.best_submitted:.4f}" + (f" ({len(own)})" if len(own) > 1 else "")
    if s.best_submitted_in_ensemble is not None:
        runs = max(sub.get("runs", 1) for sub in current if sub.get("volume_dice") == s.best_submitted_in_ensemble)
        return f"{s.best_submitted_in_ensemble:.4f} (ens {runs})"
    return f"{len(current)} unscored"


def ended_text(s: RunSummary) -> tuple[str, str] | None:
    """Why a run that did not complete ended, in two parts: `nan_abort at step 812` and the message (run_end's,
    already one line; "no reason given" when it gave none). None for a run without one (`ended_because`)."""
    if s.ended_because is None:
        return None
    named = s.end_step is not None and re.search(rf"\bstep {s.end_step}\b", s.ended_because)
    step = None if named else s.end_step
    return (one_line(s.status, 40) + ("" if step is None else f" at step {step}"),
            s.ended_because or "no reason given")


def format_dice(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


LEGEND = ("Dice at the best epoch (chosen by volume Dice, the epoch checkpoints/best.pt holds): vol = volume "
          "Dice (per case, averaged), slice = per 2D slice (empty on empty counts as 1), global = pooled "
          "voxels. submitted = best evaluated volume Dice of a submission of the run's checkpoint as it is now, (N) "
          "after it: the best of N submissions; (ens N): of an ensemble of N runs it was part of; stale: only of a "
          "checkpoint since replaced.")


def varied_settings(summaries: list[RunSummary]) -> list[str]:
    """Dotted config keys whose value is not the same in every listed run (missing counts as a value)."""
    with_config = [s for s in summaries if s.settings]
    if len(with_config) < 2:
        return []
    keys: list[str] = []
    for s in with_config:
        keys.extend(k for k in s.settings if k not in keys)
    varied = []
    for key in keys:
        if key in IGNORED_SETTINGS or key.rsplit(".", 1)[-1] == "description":
            continue
        values = {_hashable(s.settings.get(key, _MISSING)) for s in with_config}
        if len(values) > 1:
            varied.append(key)
    return varied




_MISSING = "\0missing"


def settings_beyond_preset(preset: Any, settings: dict[str, Any], *, where: str = "config.toml") -> str:
    """`settings beyond preset demo: data.input_size=64, train.epochs=1`: what a run's or experiment's flat settings
    set other than its preset as it is now, leaving out what the table leaves out of its columns (IGNORED_SETTINGS),
    so `report` says what was tried without printing the config (`where` holds it whole)."""
    from liverctl.config import resolve_config
    from liverctl.runs.summary import flatten_config

    shown = one_line(preset, 60) or "-"
    try:
        base = flatten_config(resolve_config(preset)) if isinstance(preset, str) else None
    except LiverctlError:
        base = None
    if base is None:
        return f"settings: preset {shown} is none of today's presets; its config is in {where}"
    changed = [f"{key}={one_line(format_setting(value), 60)}" for key, value in settings.items()
               if key not in IGNORED_SETTINGS and key.rsplit(".", 1)[-1] != "description"
               and base.get(key, _MISSING) != value]
    return f"settings beyond preset {shown}: {', '.join(changed) or 'none'}"


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)


def format_setting(value: Any) -> str:
    if value is _MISSING or value is None:
        return "-"
    if isinstance(value, tuple):
        return "[" + ", ".join(format_setting(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)



# ------------------------------------------------------------------------------------- rows, sorting


def summary_row(summary: RunSummary, varied: list[str]) -> dict[str, Any]:
    """A flat record of the table's columns (values unformatted), as `--json` / `--csv` give it."""
    row: dict[str, Any] = {"name": summary.name, "preset": summary.preset}
    for key in varied:
        value = summary.settings.get(key)
        row[key] = list(value) if isinstance(value, tuple) else value
    row.update(
        status=summary.status,
        nan=summary.nan_events,
        epochs=summary.epochs_done,
        epochs_planned=summary.epochs_planned,
        best_epoch=summary.best_epoch,
        volume_dice=_round(summary.volume_dice),
        slice_dice=_round(summary.slice_dice),
        global_dice=_round(summary.global_dice),
        wall=None if summary.wall_seconds is None else round(summary.wall_seconds, 1),
        submitted=_round(summary.best_submitted),
        submitted_in_ensemble=_round(summary.best_submitted_in_ensemble),
        started=summary.started,
        path=str(summary.path),
        problems=list(summary.problems),
        ended_because=summary.ended_because,
    )
    if summary.kind == "experiment":
        from liverctl.experiment.summary import experiment_row_extra

        row.update(experiment_row_extra(summary, varied))
    return {key: json_value(value) for key, value in row.items()}


def _column_value(summary: RunSummary, column: str) -> Any:
    spec = _BY_KEY.get(column)
    return spec.value(summary) if spec is not None else summary.settings.get(column)


def known_columns(summaries: list[RunSummary]) -> list[str]:
    keys = list(_BY_KEY)
    for s in summaries:
        keys.extend(k for k in s.settings if k not in keys)
    return keys


def sort_runs(summaries: list[RunSummary], column: str, *, reverse: bool = False) -> list[RunSummary]:
    """Sort by a column or a dotted setting key. Numbers largest first (newest first for `started`),
    text A to Z; runs without a value go last. `reverse` flips the order of the others."""
    if column not in known_columns(summaries):
        raise LiverctlError(f"unknown column {quoted(column)} to sort by{_choices(column, summaries)}")
    present = [s for s in summaries if _column_value(s, column) is not None]
    absent = [s for s in summaries if _column_value(s, column) is None]
    numeric = all(isinstance(_column_value(s, column), (int, float)) for s in present)
    if numeric:
        present.sort(key=lambda s: _column_value(s, column), reverse=not reverse)
    else:
        present.sort(key=lambda s: format_setting(_column_value(s, column)).lower(), reverse=reverse)
    return present + absent



def _choices(column: str, summaries: list[RunSummary]) -> str:
    """What to write instead of an unknown `column`: the nearest one, the table's columns, and the settings in
    a word (every key of every run's config listed after them was 60 names; `volume` got no `volume_dice`)."""
    near = did_you_mean(column, known_columns(summaries), cutoff=0.5)
    return ((f" ({near})" if near else "") + f"; columns: {', '.join(_BY_KEY)}, or a setting "
            "of the runs' config as section.key (e.g. optim.lr)")


_OPERATORS = ("!=", ">=", "<=", "=", ">", "<")


FILTER_RULE = ("Filters apply to every row: a fold run is listed, beneath its experiment, when it matches; an "
               "experiment when it or one of its fold runs does.")


def filter_runs(summaries: list[RunSummary], filters: list[str]) -> list[RunSummary]:
    """Keep runs matching every filter `COLUMN OP VALUE`, OP one of = != > < >= <=; an experiment's fold runs are
    rows of their own (`FILTER_RULE`): `data.fold=2` lists each experiment with its fold 2 beneath it (they have
    no data.fold, their folds have), `volume_dice>=0.9` only the folds that reach it (all of them were listed).

    `=` / `!=` compare text with shell wildcards (`name=v3*`); the others compare numbers
    (`volume_dice>=0.9`). COLUMN is a table column or any dotted setting (`loss.name=tversky`).
    """
    parsed = [_parse_filter(f, [*summaries, *(fold for s in summaries for fold in s.folds)]) for f in filters]
    if not parsed:
        return list(summaries)
    kept = []
    for s in summaries:
        folds = [fold for fold in s.folds if all(_matches(fold, *p) for p in parsed)]
        if folds or all(_matches(s, *p) for p in parsed):
            kept.append(replace(s, folds=folds) if s.kind == "experiment" else s)
    return kept


def _parse_filter(text: str, summaries: list[RunSummary]) -> tuple[str, str, str]:
    for op in _OPERATORS:
        column, sep, value = text.partition(op)
        if sep and column.strip():
            column = column.strip()
            if column not in known_columns(summaries):
                raise LiverctlError(f"filter {quoted(text)}: unknown column {quoted(column)}{_choices(column, summaries)}")
            if op not in ("=", "!=") and _float(value) is None:
                raise LiverctlError(f"filter {quoted(text)}: {op} needs a number")
            return column, op, value.strip()
    raise LiverctlError(f"filter {quoted(text)}: write COLUMN=VALUE (or != > < >= <=), e.g. preset=v5")


def _matches(summary: RunSummary, column: str, op: str, value: str) -> bool:
    actual = _column_value(summary, column)
    if op in ("=", "!="):
        text = format_setting(actual)
        hit = fnmatch.fnmatchcase(text.lower(), value.lower())
        if not hit and finite(actual) is not None:
            hit = _float(value) is not None and math.isclose(finite(actual), float(value))
        return hit if op == "=" else not hit
    actual = finite(actual)
    if actual is None:
        return False
    target = float(value)
    return {">": actual > target, "<": actual < target, ">=": actual >= target, "<=": actual <= target}[op]



def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None




def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"

