"""The experiment's out-of-fold option table and fold figures as rows of text, for `liverctl report` (its
HTML in `liverctl.report.html`, its console table here)."""

from __future__ import annotations

from pathlib import Path

from liverctl.experiment.folder import (
    decision_caution,
    killed_text,
    read_summary,
    spread_text,
    status_now,
)
from liverctl.plural import plural
from liverctl.printable import QUOTE_LIMIT, one_line
from liverctl.runs.history import dice

OPTION_HEAD = ("threshold", "post-processing", "volume Dice", "slice Dice", "global Dice")


def option_rows(summary: dict) -> list[tuple[str, ...]]:
    """Every option tried, best volume Dice first; the chosen one marked with `*`."""
    decision = summary.get("decision") or {}
    rows = []
    options = decision.get("options")
    options = [o for o in options if isinstance(o, dict)] if isinstance(options, list) else []
    options.sort(key=lambda o: -(dice(o.get("volume_dice")) or 0.0))
    for o in options:
        chosen = o.get("threshold") == decision.get("threshold") and o.get("post") == decision.get("post")
        rows.append((f"{_g(o.get('threshold'))}{' *' if chosen else ''}", one_line(o.get("post"), QUOTE_LIMIT),
                     *(_fmt(o.get(k)) for k in ("volume_dice", "slice_dice", "global_dice"))))
    return rows


def option_grid(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The options' volume Dice (what the decision chose by) as a grid: a row per post-processing, in the order
    tried, a column per threshold, lowest first; the chosen cell marked `*`. `report EXP` prints this: the 40 rows of
    `option_rows` (5 thresholds x 8 post-processings, slice and global Dice too) are its HTML's. ([], []) when none."""
    decision = summary.get("decision") or {}
    options = decision.get("options")
    options = [o for o in options if isinstance(o, dict)] if isinstance(options, list) else []
    thresholds = sorted({o.get("threshold") for o in options if _g(o.get("threshold")) != "-"})
    posts = list(dict.fromkeys(one_line(o.get("post"), QUOTE_LIMIT) for o in options))
    if not thresholds or not posts:
        return [], []
    cells = {(one_line(o.get("post"), QUOTE_LIMIT), o.get("threshold")): o for o in options}
    rows = []
    for post in posts:
        row = [post]
        for t in thresholds:
            o = cells.get((post, t))
            chosen = o is not None and t == decision.get("threshold") and o.get("post") == decision.get("post")
            row.append("" if o is None else f"{_fmt(o.get('volume_dice'))}{' *' if chosen else ''}")
        rows.append(row)
    return ["post-processing", *(f"threshold {_g(t)}" for t in thresholds)], rows


def settings_text(summary: dict) -> str:
    """`settings beyond preset demo: data.input_size=64, train.epochs=1` of an experiment (`runs.table.
    settings_beyond_preset`, as `report RUN` says it of a run), data.fold left out: each fold's own."""
    from liverctl.experiment.summary import experiment_settings
    from liverctl.runs.table import settings_beyond_preset

    return settings_beyond_preset(summary.get("preset"), experiment_settings(summary), where="experiment.json")


FOLD_HEAD = ("fold", "run", "status", "best volume Dice", "out-of-fold cases")


def fold_rows(summary: dict) -> list[tuple[str, ...]]:
    """(fold, run, status, best volume Dice, out-of-fold cases) per fold."""
    rows = []
    for fold in summary["folds"]:
        entry = summary["fold_results"].get(str(fold)) or {}
        best = (entry.get("best") or {}).get("volume_dice")
        rows.append((str(fold), str(entry.get("run", f"fold-{fold}")), str(entry.get("status", "not started")),
                     _fmt(best), str(len(entry.get("oof_cases") or []))))
    return rows


def headline(summary: dict, exp_dir: Path | None = None) -> str:
    """The experiment in a line of plain text (not markup); its texts from experiment.json, anyone's file, as
    printable text (`printable.one_line`): a decision's post holding ESC and a newline was printed as it was.
    Its status as it stands now where `exp_dir` is given (`folder.status_now`: a killed one is interrupted, with
    what to do), else as written."""
    cv, o, d = summary.get("cv") or {}, summary.get("oof") or {}, summary.get("decision") or {}
    name, preset = (one_line(summary.get(key), QUOTE_LIMIT) or "-" for key in ("name", "preset"))
    status = str(summary.get("status") or "unknown") if exp_dir is None else status_now(exp_dir, summary)
    parts = [f"experiment {name} ({preset}, {plural(len(summary['folds']), 'fold')}, {one_line(status, QUOTE_LIMIT)})"]
    if exp_dir is not None and (killed := killed_text(exp_dir, summary, status)) is not None:
        parts.append(killed)
    if cv.get("mean") is not None:
        parts.append(f"per-fold best volume Dice {_fmt(cv['mean'])}{spread_text(cv)}")
    if o.get("volume_dice") is not None:
        parts.append(f"pooled out-of-fold ({plural(o.get('cases'), 'case')}, threshold {_g(o.get('threshold'))}, no "
                     f"post-processing): volume {_fmt(o['volume_dice'])}, slice {_fmt(o.get('slice_dice'))}, "
                     f"global {_fmt(o.get('global_dice'))}")
    if d:
        parts.append(f"decision: threshold {_g(d.get('threshold'))}, post {one_line(d.get('post'), QUOTE_LIMIT)} "
                     f"(out-of-fold volume Dice {_fmt(d.get('volume_dice'))})")
    if o.get("note"):
        parts.append(one_line(o["note"]))
    caution = decision_caution(summary)
    if caution:
        parts.append(caution)
    return "; ".join(parts)


def _fmt(value) -> str:
    """A Dice figure (or its spread) to 4 places; `-` for what is none (text, NaN, 1e308, -4: anyone's file)."""
    number = dice(value)
    return "-" if number is None else f"{number:.4f}"


def _g(value) -> str:
    """A threshold as written (experiment.json is anyone's file): `0.5`, or `-` for what is not a number."""
    return "-" if not isinstance(value, (int, float)) else f"{value:g}"


def expand_report_specs(specs, runs_dir) -> tuple[list[Path], list[Path], list[Path]]:
    """`liverctl report` arguments: an experiment stands for its fold runs (side by side), a name or path
    for a run folder (`liverctl.runs.folder.resolve_run`). Returns (run folders, experiment folders, the
    folders as named: each argument's run or experiment folder, in order, which name the report's folder)."""
    from liverctl.experiment.folder import find_experiment, fold_dir
    from liverctl.runs.folder import is_run_dir, resolve_run

    run_dirs: list[Path] = []
    experiments: list[Path] = []
    named: list[Path] = []
    for spec in specs:
        exp = find_experiment(spec, runs_dir)
        if exp is None:
            run_dirs.append(resolve_run(runs_dir, spec, need="run"))
            named.append(run_dirs[-1])
            continue
        experiments.append(exp)
        named.append(exp)
        run_dirs.extend(fold_dir(exp, f) for f in read_summary(exp)["folds"] if is_run_dir(fold_dir(exp, f)))
    return run_dirs, experiments, named
