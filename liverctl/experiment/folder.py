"""The experiment folder: names, `experiment.json` (written atomically), `--folds`, consistency checks.

No torch, numpy or zarr here: `liverctl runs` and `submit` read experiments through this module.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liverctl.config import SECTIONS
from liverctl.errors import LiverctlError
from liverctl.files import file_sha256, write_atomic
from liverctl.printable import QUOTE_LIMIT, one_line, quoted
from liverctl.runs.events import json_value
from liverctl.runs.folder import checkpoint_path

FORMAT = "liverctl-experiment/1"
SUMMARY_FILE = "experiment.json"
OOF_STORE = "oof.zarr"
FOLD_PREFIX = "fold-"


def fold_dir(exp_dir: str | os.PathLike, fold: int) -> Path:
    return Path(exp_dir) / f"{FOLD_PREFIX}{fold}"


def is_experiment_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / SUMMARY_FILE).is_file()


def find_experiment(spec: str | os.PathLike, runs_root: str | os.PathLike = "runs") -> Path | None:
    """The experiment folder named by a path or a name under `runs_root`, or None when it is not one."""
    for candidate in (Path(spec), Path(runs_root) / spec):
        if is_experiment_dir(candidate):
            return candidate
    return None


def status_now(exp_dir: str | os.PathLike, summary: dict) -> str:
    """experiment.json's status as it stands now: "interrupted" where it says running but no live process holds
    the experiment folder's lock (a SIGKILL, the out-of-memory killer or a lost session leave no last word), so
    `runs`, `watch`, `report` and `submit` never call a killed experiment running."""
    from liverctl.runs.folder import writer_alive

    status = str(summary.get("status") or "unknown")
    return "interrupted" if status == "running" and not writer_alive(exp_dir) else status


def killed_text(exp_dir: str | os.PathLike, summary: dict, status: str) -> str | None:
    """What a killed experiment is, and what to do, in one line: one whose experiment.json says running where
    `status_now` (`status`) found nothing writing it; None for any other (a Ctrl-C or a time limit wrote its own
    last word)."""
    if status != "interrupted" or summary.get("status") != "running":
        return None
    return (f"{SUMMARY_FILE} says running but nothing is writing it (killed?); continue it with "
            f"`liverctl train --resume {exp_dir}`")


def experiment_of_fold(run_dir: str | os.PathLike) -> Path | None:
    """The experiment folder that holds `run_dir` as one of its folds (`<exp>/fold-<k>/`), else None."""
    run_dir = Path(run_dir)
    if run_dir.name.startswith(FOLD_PREFIX) and is_experiment_dir(run_dir.parent):
        return run_dir.parent
    return None


def fold_number(run_dir: str | os.PathLike) -> int | None:
    """k of a fold run folder `<exp>/fold-<k>/` of an experiment, else None."""
    number = Path(run_dir).name.removeprefix(FOLD_PREFIX)
    if experiment_of_fold(run_dir) is None or not (number.isascii() and number.isdigit()):
        return None
    return int(number)


def write_summary(exp_dir: str | os.PathLike, summary: dict) -> Path:
    """Write `experiment.json` whole, through the one atomic write."""
    path = Path(exp_dir) / SUMMARY_FILE
    summary = {**summary, "format": FORMAT, "updated": time.time()}
    text = json.dumps(json_value(summary), indent=1, allow_nan=False)
    write_atomic(path, text, what="the experiment summary")
    return path


def read_summary(exp_dir: str | os.PathLike) -> dict:
    """`experiment.json`, checked enough to be used; LiverctlError (one line) otherwise."""
    path = Path(exp_dir) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LiverctlError(f"not an experiment folder (no {SUMMARY_FILE})", path=exp_dir) from None
    except (OSError, ValueError, RecursionError) as exc:  # not UTF-8 or JSON, an integer of thousands of digits;
        # nested absurdly
        raise LiverctlError(f"cannot read the experiment summary ({type(exc).__name__}: {one_line(exc, 120)})",
                            path=path) from None
    if not isinstance(summary, dict) or summary.get("format") != FORMAT:
        raise LiverctlError(f"not a liverctl experiment summary (expected format {FORMAT})", path=path)
    folds = summary.get("folds")
    if not isinstance(folds, list) or not folds or not all(
        isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in folds
    ):
        raise LiverctlError("experiment summary has no usable list of folds", path=path)
    config = summary.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        raise LiverctlError("experiment summary has no config (a table with a data section)", path=path)
    summary.setdefault("fold_results", {})
    _check_tables(summary, path)
    return summary


def _check_tables(summary: dict, path: Path) -> None:
    """The parts every reader indexes are tables (or absent): fold_results of per-fold tables, each one's best,
    cv, oof and decision, and the config's sections; one line naming the first that is not."""
    def table(value, name: str, optional: bool = True) -> None:
        if not (isinstance(value, dict) or (optional and value is None)):
            raise LiverctlError(f"experiment summary's {name} is {type(value).__name__}, not a table "
                                "(the file is damaged or was edited by hand)", path=path)

    table(summary["fold_results"], "fold_results", optional=False)
    for fold, entry in summary["fold_results"].items():
        table(entry, f"fold_results[{quoted(fold)}]", optional=False)
        table(entry.get("best"), f"fold_results[{quoted(fold)}].best")
        table(entry.get("checkpoints"), f"fold_results[{quoted(fold)}].checkpoints")
    for key in ("cv", "oof", "decision"):
        table(summary.get(key), key)
    for section in SECTIONS:
        table(summary["config"].get(section), f"config.{section}")


# ------------------------------------------------------------------------------------------- --folds


def store_folds(store) -> tuple[int, dict[int, int]]:
    """(the store's fold count, cases per fold >= 0). Train-only cases (fold -2) are in no fold."""
    counts: dict[int, int] = {}
    for fold in store.folds().values():
        if fold >= 0:
            counts[fold] = counts.get(fold, 0) + 1
    n_folds = int(store.attrs.get("n_folds") or (max(counts) + 1 if counts else 0))
    return n_folds, counts


def empty_folds(store) -> list[int]:
    """The store's folds that hold no case (a store of fewer patients than folds)."""
    n_folds, counts = store_folds(store)
    return [fold for fold in range(n_folds) if not counts.get(fold)]


def parse_folds(text: str, store) -> list[int]:
    """`all` or `0,2,4` -> sorted fold numbers, each one a fold of the store that holds cases.

    `all` is the folds that hold cases: a fold without any can be neither validated nor hold a case out, and
    leaving it out changes nothing else (every case is still held out once, by the fold it is in, and the
    ensemble is the folds trained). A fold named on its own must hold cases."""
    n_folds, counts = store_folds(store)
    spec = str(text).strip().lower()
    if spec == "all":
        folds = [fold for fold in range(n_folds) if counts.get(fold)]
    else:
        try:
            given = [int(part) for part in spec.replace(" ", "").split(",") if part]
        except ValueError:
            raise LiverctlError(f"--folds takes 'all' or fold numbers such as 0,2,4 (got {quoted(text)})") from None
        if not given:
            raise LiverctlError(f"--folds takes 'all' or fold numbers such as 0,2,4 (got {quoted(text)})")
        # `--folds 0,0` trained fold 0 once, as an experiment of one fold, without a word
        if (twice := next((fold for i, fold in enumerate(given) if fold in given[:i]), None)) is not None:
            raise LiverctlError(f"--folds {quoted(text)}: fold {twice} is given twice; give each fold once")
        folds = sorted(given)
    for fold in folds:
        if fold < 0 or fold >= n_folds:
            raise LiverctlError(
                f"--folds: fold {fold} is not in this {n_folds}-fold store (folds 0-{n_folds - 1})", path=store.path
            )
        if not counts.get(fold):
            raise LiverctlError(
                f"--folds: fold {fold} has no cases in this store (folds with cases: "
                f"{', '.join(str(f) for f in sorted(counts)) or 'none'})",
                path=store.path,
            )
    if len(counts) < 2:
        raise LiverctlError("cross-validation needs at least two folds with cases in the store", path=store.path)
    return folds


# Below this many pooled out-of-fold cases the decision's options (their volume Dice a few thousandths apart) are
# told apart mostly by which cases happened to be held out: a fifth of the competition's ~80 training volumes.
MIN_DECISION_CASES = 20


def decision_caution(summary: dict) -> str | None:
    """What makes an experiment's out-of-fold decision thin, in one line with what to do, or None: fewer than
    MIN_DECISION_CASES pooled cases, or folds that hold out only some of the store's cases (`--folds 0,2`).
    From experiment.json's facts (decision.cases, oof.cases_per_fold, folds, case_folds), anyone's file: what it
    lacks is left out. Said, never refused: a thin decision is still the best one these cases allow."""
    from liverctl.plural import plural

    decision = summary.get("decision") if isinstance(summary.get("decision"), dict) else {}
    cases = decision.get("cases")
    if not isinstance(cases, int) or isinstance(cases, bool) or cases < 1:
        return None
    folds = [f for f in summary.get("folds") or [] if isinstance(f, int)]
    case_folds = summary.get("case_folds")
    store_folds = sorted({f for f in case_folds.values() if isinstance(f, int) and f >= 0}) \
        if isinstance(case_folds, dict) else []
    store_cases = sum(1 for f in case_folds.values() if isinstance(f, int) and f >= 0) if store_folds else None
    partial = bool(store_folds) and not set(store_folds) <= set(folds)
    few = cases < MIN_DECISION_CASES
    if not (partial or few):
        return None
    oof = summary.get("oof") if isinstance(summary.get("oof"), dict) else {}
    per_fold = oof.get("cases_per_fold") if isinstance(oof.get("cases_per_fold"), dict) else {}
    counts = sorted(n for n in per_fold.values() if isinstance(n, int) and not isinstance(n, bool))
    spread = "" if not counts else f" ({counts[0]}{'' if counts[0] == counts[-1] else f'-{counts[-1]}'} per fold)"
    text = f"thin decision: made on only {plural(cases, 'out-of-fold case')}{spread}"
    if partial:
        shown = ", ".join(map(str, folds))
        text += (f", from {'fold' if len(folds) == 1 else 'folds'} {shown} of the store's {len(store_folds)} "
                 f"({plural(store_cases, 'training case')})")
    if few:
        text += (f"; with fewer than {MIN_DECISION_CASES} the best option wins largely by chance, and the defaults "
                 "(config threshold, no post-processing) may do as well")
    todo = []
    if partial:
        todo.append(f"a new experiment with `--folds all` decides on all {store_cases}")
    if few and (store_cases is None or store_cases < MIN_DECISION_CASES):
        todo.append("more training cases make it firmer")
    return text + (f"; {' and '.join(todo)}" if todo else "")


def spread_text(cv: dict) -> str:
    """' +- 0.0100': the spread (population std) of an experiment's per-fold best volume Dice as printed after their
    mean, `cv` as experiment.json records it (`experiment.train.cv_figures`); ' +- -' where the file holds no such
    figure; '' for one fold, whose spread is none ('+- 0.0000' was printed for it)."""
    from liverctl.runs.history import dice

    folds = cv.get("folds")
    if isinstance(folds, dict) and len(folds) == 1:
        return ""
    std = dice(cv.get("std"))
    return " +- " + ("-" if std is None else f"{std:.4f}")


def fold_assignment(store) -> dict[str, int]:
    """Case -> fold of the cases in a fold (what the experiment's out-of-fold predictions cover)."""
    return {case: fold for case, fold in sorted(store.folds().items()) if fold >= 0}


# ------------------------------------------------------------------------------------------- checks


def _same_store(a: Any, b: Any) -> bool:
    try:
        return Path(str(a)).resolve() == Path(str(b)).resolve()
    except (OSError, ValueError):  # ValueError: a NUL in a path from someone's file
        return str(a) == str(b)


def check_fold_config(exp_dir: Path, summary: dict, fold: int, cfg: Any, where: str) -> None:
    """One line when a fold was trained on another store or preset than its experiment, or another fold.

    `cfg` is the fold's config as its run recorded it (config.toml as written, `config.read_recorded_config`, or a
    checkpoint's `RECORDED_CONFIG`), compared key for key with the experiment's as experiment.json recorded it:
    a config filled in with today's defaults would differ from an experiment recorded before a key was added (or
    agree with one whose recorded value happens to be today's default)."""
    exp_cfg = summary["config"]
    if not isinstance(cfg, dict):
        raise LiverctlError(f"fold {fold}'s config is a {type(cfg).__name__}, not a table", path=where)
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    if cfg.get("preset") != summary.get("preset"):
        raise LiverctlError(
            f"fold {fold} was trained with preset {quoted(cfg.get('preset'), 60)}, the experiment with "
            f"{quoted(summary.get('preset'), 60)}",
            path=where,
        )
    store, exp_store = data.get("store"), exp_cfg["data"].get("store")
    if not _same_store(store, exp_store):
        raise LiverctlError(
            f"fold {fold} was trained on store {quoted(str(store), 200)}, the experiment on {quoted(str(exp_store), 200)}", path=where
        )
    held_out = data.get("fold")
    if type(held_out) is not int or held_out != fold:
        raise LiverctlError(f"{Path(where).name} holds out fold {quoted(held_out, 60)}, not fold {fold}", path=where)
    # A fold run is its experiment's config with data.fold set: any other difference means a fold folder of
    # another experiment (or one changed since) whose out-of-fold predictions the decision never saw.
    difference = _first_difference(cfg, exp_cfg)
    if difference is not None:
        key, ours, theirs = difference
        raise LiverctlError(
            f"fold {fold} was trained with {key} = {quoted(ours, 60)}, the experiment with {quoted(theirs, 60)}: it is not "
            "this experiment's fold (copied from another experiment, or changed since); train the experiment again",
            path=where,
        )


def _first_difference(fold_cfg: dict, exp_cfg: dict) -> tuple[str, Any, Any] | None:
    """(dotted key, the fold's value, the experiment's) of the first key where two configs differ (data.fold
    and data.store aside: checked above). A key one of them lacks reads as today's default, as `check_config`
    fills it in when either is loaded: a fold trained after an upgrade records a key added since, which its
    older experiment.json lacks; a key no default has either is "(missing)"."""
    from liverctl.config import load_defaults
    from liverctl.runs.summary import flatten_config

    ours, theirs, defaults = flatten_config(fold_cfg), flatten_config(exp_cfg), flatten_config(load_defaults())
    for key in sorted(set(ours) | set(theirs)):
        if key in ("data.fold", "data.store", "description"):
            continue
        mine, its = ours.get(key, defaults.get(key, "(missing)")), theirs.get(key, defaults.get(key, "(missing)"))
        if mine != its:
            return key, mine, its
    return None


def checkpoint_hashes(run_dir: str | os.PathLike) -> dict[str, str]:
    """sha256 of a finished fold run's best and last checkpoints (those there): what `fold_results[k].checkpoints`
    records, so that a checkpoint put in its place later (another fold's best.pt has the same config) is noticed."""
    paths = {which: checkpoint_path(run_dir, which) for which in ("best", "last")}
    return {which: file_sha256(path) for which, path in paths.items() if path.is_file()}


def recorded_checkpoint_sha256(summary: dict, fold: int, which: str = "best") -> str | None:
    """The sha256 of fold `fold`'s `<which>.pt` that experiment.json recorded when the fold finished; None when it
    records none (an experiment from before liverctl recorded them)."""
    recorded = ((summary["fold_results"].get(str(fold)) or {}).get("checkpoints") or {}).get(which)
    return recorded if isinstance(recorded, str) else None


def check_fold_checkpoint(exp_dir: Path, summary: dict, fold: int, which: str, sha256: str) -> None:
    """One line naming fold `fold`'s `<which>.pt` when `sha256`, that of the bytes about to be loaded from it
    (`liverctl.runs.checkpoint.load_plain`'s `verify`), differs from the sha256 experiment.json recorded when the
    fold finished; nothing when it records none."""
    recorded = recorded_checkpoint_sha256(summary, fold, which)
    if recorded is not None and sha256 != recorded:
        raise LiverctlError(
            f"not the checkpoint fold {fold} produced: its sha256 differs from the one {SUMMARY_FILE} recorded when "
            "the fold finished (copied from another fold or run, or changed since); train the experiment again",
            path=checkpoint_path(fold_dir(exp_dir, fold), which),
        )


def fold_checkpoint_check(exp_dir: Path, summary: dict, fold: int, which: str = "best") -> Callable[[str], None] | None:
    """`check_fold_checkpoint` for fold `fold`'s `<which>.pt`, as the `verify` of the load that parses it, so that
    the bytes checked are the bytes loaded; None when experiment.json records no sha256 of it."""
    if recorded_checkpoint_sha256(summary, fold, which) is None:
        return None
    return functools.partial(check_fold_checkpoint, exp_dir, summary, fold, which)


def check_store_unchanged(summary: dict, store, exp_dir: Path) -> None:
    """The store still assigns the cases to the folds the experiment was trained with."""
    recorded = summary.get("case_folds")
    if isinstance(recorded, dict) and recorded != fold_assignment(store):
        raise LiverctlError(
            f"the store's cases or folds changed since the experiment began ({store.path}); "
            "start a new experiment",
            path=exp_dir,
        )


def current_fold(spec: str | os.PathLike, runs_root: str | os.PathLike = "runs") -> tuple[Path, str] | None:
    """For `liverctl watch EXPERIMENT`: (the fold run being trained, or the next / last one, and a line
    with the finished folds' best volume Dice); None when `spec` is not an experiment. The line says whether
    the experiment is being trained ('following fold 2'), completed (its mean and decision) or stopped (how,
    and the command that continues it): the fold shown beneath is only one of its folds."""
    from liverctl.runs.history import dice as dice_figure

    exp = find_experiment(spec, runs_root)
    if exp is None:
        return None
    summary = read_summary(exp)
    results = summary["fold_results"]
    folds = summary["folds"]
    running = [f for f in folds if (results.get(str(f)) or {}).get("status") == "running"]
    pending = [f for f in folds if not (results.get(str(f)) or {}).get("oof_done")]
    fold = (running or pending or folds[-1:])[0]
    done = []
    for f in folds:
        entry = results.get(str(f)) or {}
        dice = (entry.get("best") or {}).get("volume_dice")
        if entry.get("oof_done") and isinstance(dice, (int, float)):
            done.append(f"fold {f} {dice:.4f}")
    finished = f"finished folds' best volume Dice: {', '.join(done) or 'none yet'}"
    status = status_now(exp, summary)
    if status == "running":  # the experiment holds its folder's lock while it trains
        return fold_dir(exp, fold), f"experiment {exp.name}: following fold {fold}; {finished}"
    if status == "completed":
        cv = summary.get("cv") if isinstance(summary.get("cv"), dict) else {}
        mean = dice_figure(cv.get("mean"))
        across = f"; {mean:.4f}{spread_text(cv)}" if mean is not None and len(done) > 1 else ""
        decision = summary.get("decision") if isinstance(summary.get("decision"), dict) else {}
        chosen = dice_figure(decision.get("volume_dice"))
        decided = (f"; out-of-fold decision: threshold {one_line(decision.get('threshold'), QUOTE_LIMIT)}, post "
                   f"{one_line(decision.get('post'), QUOTE_LIMIT)}"
                   + (f" (volume Dice {chosen:.4f})" if chosen is not None else "")) if decision else ""
        caution = decision_caution(summary) if decision else None
        decided += f"; {caution}" if caution else ""
        return fold_dir(exp, fold), f"experiment {exp.name} completed: {finished}{across}{decided}; fold {fold} shown"
    why = one_line(summary.get("message")) if summary.get("status") != "running" else ""  # killed: no word
    return fold_dir(exp, fold), (f"experiment {exp.name} {one_line(status)}{f' ({why})' if why else ''}: {finished}; "
                                 f"fold {fold} shown; continue it with `liverctl train --resume {exp}`")
