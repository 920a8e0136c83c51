"""The experiment table: one `RunSummary` per run folder, read from files only.

A run folder (`runs/<name>/`, see ARCHITECTURE.md) is summarised from `config.toml`, `events.jsonl`,
the `checkpoints/*.json` sidecars and `submissions.jsonl` (with the `<csv>.scores.json` that `evaluate`
writes beside each submission). Nothing here imports torch or numpy, so listing hundreds of runs stays
fast; `step` events, the bulk of a log, are skipped without being parsed.

Whatever is missing or odd (no config, a torn last line, no checkpoint, an unknown event schema) is
recorded in `RunSummary.problems` instead of raising: one broken run must not hide the others.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.errors import LiverctlError
from liverctl.runs.checkpoint import FORMAT as CHECKPOINT_FORMAT
from liverctl.runs.events import EVENTS_FILE, SCHEMA_VERSION, loads_object, parse_line
from liverctl.runs.folder import CHECKPOINT_DIR, CONFIG_FILE, SUBMISSIONS_FILE, is_run_dir

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# A log without `run_end` that was written to this recently belongs to a run still going.
RUNNING_WINDOW_S = 30 * 60
# Settings that differ between runs without changing what a run learns: not worth a column.
IGNORED_SETTINGS = ("description", "preset", "data.store", "data.num_workers", "train.log_every",
                    "infer.batch_size")
# Table columns besides the varied settings, in display order.
COLUMNS = ("name", "preset", "status", "nan", "epochs", "volume_dice", "slice_dice", "global_dice",
           "wall", "submitted")
NUMERIC_COLUMNS = ("nan", "epochs", "volume_dice", "slice_dice", "global_dice", "wall", "submitted",
                   "started")


@dataclass
class RunSummary:
    """What `liverctl runs` shows about one run folder. Dice figures are those of the best epoch."""

    name: str
    path: Path
    preset: str | None = None
    status: str = "unknown"
    nan_events: int = 0
    epochs_done: int = 0
    epochs_planned: int | None = None
    best_epoch: int | None = None
    volume_dice: float | None = None
    slice_dice: float | None = None
    global_dice: float | None = None
    wall_seconds: float | None = None
    started: float | None = None
    updated: float | None = None
    schema_version: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    submissions: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    kind: str = "run"  # or "experiment" (liverctl/experiment/summary.py): its folds beneath, cv figures
    folds: list[RunSummary] = field(default_factory=list)
    cv: dict[str, Any] = field(default_factory=dict)

    @property
    def best_submitted(self) -> float | None:
        """The best volume Dice among this run's evaluated submissions (None when none was scored)."""
        scores = [s["volume_dice"] for s in self.submissions if s.get("volume_dice") is not None]
        return max(scores) if scores else None


# --------------------------------------------------------------------------------------------- reading


def _is_listed(path: Path) -> bool:
    from liverctl.experiment.folder import is_experiment_dir

    return is_run_dir(path) or is_experiment_dir(path)


def _summarize(path: Path, now: float | None) -> RunSummary:
    from liverctl.experiment.folder import is_experiment_dir
    from liverctl.experiment.summary import summarize_experiment

    return summarize_experiment(path, now=now) if is_experiment_dir(path) else summarize_run(path, now=now)


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    """The run folders directly under `root` (or `root` itself when it is one)."""
    root = Path(root)
    if not root.exists():
        raise LiverctlError("no such folder; train a run first (`liverctl train --preset demo`)", path=root)
    if not root.is_dir():
        raise LiverctlError("not a folder of runs", path=root)
    if _is_listed(root):
        return [root]
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and _is_listed(p))


def scan_runs(root: str | os.PathLike, *, now: float | None = None) -> list[RunSummary]:
    """Summaries of every run under `root`, newest first. Raises LiverctlError when there is none."""
    dirs = find_run_dirs(root)
    if not dirs:
        raise LiverctlError(
            "no runs here (a run folder holds events.jsonl or config.toml); "
            "train one with `liverctl train --preset demo`",
            path=root,
        )
    summaries = [_summarize_or_problem(d, now) for d in dirs]
    return sort_runs(summaries, "started")


def _summarize_or_problem(run_dir: Path, now: float | None) -> RunSummary:
    """`summarize_run`, and should a run folder still defeat it, a row saying so: never hide the others."""
    try:
        return _summarize(run_dir, now)
    except Exception as exc:  # noqa: BLE001 - one unreadable run must not take down the table
        return RunSummary(name=run_dir.name, path=run_dir,
                          problems=[f"could not be read ({type(exc).__name__}: {str(exc)[:100]})"])


def summarize_run(run_dir: str | os.PathLike, *, now: float | None = None) -> RunSummary:
    """Read one run folder into a RunSummary; never raises for a damaged run (see `problems`)."""
    run_dir = Path(run_dir)
    summary = RunSummary(name=run_dir.name, path=run_dir)
    config = _read_config(run_dir, summary.problems)
    log = _read_log(run_dir / EVENTS_FILE, summary.problems)
    sidecars = _read_sidecars(run_dir, summary.problems)

    if config is None:
        config = (log.run_start or {}).get("config") or (sidecars.get("last") or {}).get("config")
        if isinstance(config, dict):
            missing = "" if (run_dir / CONFIG_FILE).exists() else "config.toml missing; "  # else: said above
            summary.problems.append(f"{missing}settings taken from the event log/checkpoint")
    summary.settings = flatten_config(config) if isinstance(config, dict) else {}
    summary.preset = _first_str(
        (log.run_start or {}).get("preset"),
        (config or {}).get("preset") if isinstance(config, dict) else None,
        summary.settings.get("train.preset"),
        (sidecars.get("last") or {}).get("preset"),
    )
    summary.schema_version = log.schema_version
    summary.started = log.first_ts
    summary.updated = log.last_ts
    summary.wall_seconds = log.wall_seconds
    summary.nan_events = log.nan_events
    _fill_epochs(summary, log, sidecars)
    _fill_status(summary, log, run_dir, sidecars, time.time() if now is None else now)
    if summary.status == "running" and summary.epochs_done == 0 and "no checkpoint" in summary.problems:
        summary.problems.remove("no checkpoint")  # the first one comes at the end of the first epoch
    summary.submissions = _read_submissions(run_dir, summary.problems)
    if summary.started is None:
        try:
            summary.started = run_dir.stat().st_mtime
        except OSError:
            pass
    return summary


@dataclass
class _Log:
    """What the table needs from an event log, gathered in one pass."""

    exists: bool = False
    run_start: dict | None = None
    epoch_ends: list[dict] = field(default_factory=list)
    run_end: dict | None = None  # the run_end of the last segment (after the last run_start) only
    nan_events: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    wall_seconds: float | None = None
    schema_version: int | None = None
    mtime: float | None = None
    torn_last_line: bool = False


def _read_log(path: Path, problems: list[str]) -> _Log:
    log = _Log()
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        log.mtime = path.stat().st_mtime
    except FileNotFoundError:
        problems.append("no events.jsonl")
        return log
    except OSError as exc:
        problems.append(f"events.jsonl unreadable ({exc.strerror})")
        return log
    log.exists = True
    lines = raw.decode("utf-8", errors="replace").split("\n")
    tail = lines.pop()  # text after the last newline: a line still being written, or ""
    bad = 0
    versions: set[Any] = set()
    segment_start: float | None = None
    wall = 0.0
    last_ts: float | None = None
    pending_step: str | None = None  # the latest step line since the last other event, unparsed
    for line in lines:
        if '"kind":"step"' in line or '"kind": "step"' in line:
            # Steps are most of the log; only the time stamp of the last one before a boundary matters.
            pending_step = line
            continue
        event = parse_line(line)
        if event is None:
            bad += line.strip() != ""
            continue
        versions.add(event.get("v"))
        ts = event.get("ts") if isinstance(event.get("ts"), (int, float)) else None
        kind = event.get("kind")
        if pending_step is not None:
            last_ts = _line_ts(pending_step, last_ts)
            pending_step = None
        if kind == "run_start":
            if segment_start is not None and last_ts is not None:
                wall += max(0.0, last_ts - segment_start)
            segment_start = ts
            if log.run_start is None:
                log.run_start = event
            log.run_end = None
        elif kind == "epoch_end":
            log.epoch_ends.append(event)
        elif kind == "nan":
            log.nan_events += 1
        elif kind == "run_end":
            log.run_end = event
        if ts is not None:
            if log.first_ts is None:
                log.first_ts = ts
            last_ts = ts
    if pending_step is not None:
        last_ts = _line_ts(pending_step, last_ts)
    if tail.strip():
        log.torn_last_line = parse_line(tail) is None
        if not log.torn_last_line:  # a complete last line that just lacks its newline
            problems.append("events.jsonl: last line has no newline")
    if segment_start is None:
        segment_start = log.first_ts
    if segment_start is not None and last_ts is not None:
        wall += max(0.0, last_ts - segment_start)
        log.wall_seconds = wall
    log.last_ts = last_ts
    if bad:
        problems.append(f"events.jsonl: {bad} unreadable line(s) skipped")
    if log.run_start is None and (lines or tail):
        problems.append("events.jsonl: no run_start event (log truncated at the start?)")
    elif not lines and not tail:
        problems.append("events.jsonl is empty")
    versions.discard(SCHEMA_VERSION)
    if versions:
        log.schema_version = _describe_versions(versions, problems)
    else:
        log.schema_version = SCHEMA_VERSION if log.exists else None
    return log


def _line_ts(line: str, default: float | None) -> float | None:
    """The `ts` of one event line (`default` when it has none)."""
    event = parse_line(line)
    ts = event.get("ts") if event else None
    return float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else default


def _describe_versions(versions: set[Any], problems: list[str]) -> int | None:
    """Record a problem for event lines of another schema version; return the oldest numeric one."""
    numeric = sorted(v for v in versions if isinstance(v, int))
    if None in versions:
        problems.append("events without a schema version `v` (written by an older liverctl?); read as best we can")
    for v in numeric:
        if v < SCHEMA_VERSION:
            problems.append(f"events schema v{v} is older than v{SCHEMA_VERSION}; read as best we can")
        else:
            problems.append(f"events schema v{v} is newer than this liverctl understands (v{SCHEMA_VERSION}); "
                            "update liverctl")
    others = versions - set(numeric) - {None}
    if others:
        problems.append(f"events with an unknown schema version {sorted(map(str, others))}")
    return numeric[0] if numeric else None


def _read_config(run_dir: Path, problems: list[str]) -> dict | None:
    path = run_dir / CONFIG_FILE
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"config.toml unreadable ({(str(exc).splitlines() or [type(exc).__name__])[0][:120]})")
    except (RecursionError, ValueError) as exc:  # nested too deep, an integer of thousands of digits
        problems.append(f"config.toml unreadable ({type(exc).__name__})")
    except OSError as exc:
        problems.append(f"config.toml unreadable ({exc.strerror})")
    return None


def _read_sidecars(run_dir: Path, problems: list[str]) -> dict[str, dict]:
    """checkpoints/{last,best}.json, keyed by `last` / `best`; a problem when there is no checkpoint."""
    ckpt_dir = run_dir / CHECKPOINT_DIR
    sidecars: dict[str, dict] = {}
    for which in ("last", "best"):
        path = ckpt_dir / f"{which}.json"
        try:
            data = loads_object(path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            if (ckpt_dir / f"{which}.pt").exists():
                problems.append(f"checkpoints/{which}.pt has no {which}.json beside it")
            continue
        except OSError as exc:
            problems.append(f"checkpoints/{which}.json unreadable ({type(exc).__name__})")
            continue
        if isinstance(data, dict):
            sidecars[which] = data
            fmt = data.get("format")
            if fmt != CHECKPOINT_FORMAT:
                problems.append(f"checkpoints/{which}.json has format {fmt!r}, not {CHECKPOINT_FORMAT!r}; "
                                "read as best we can")
        else:
            problems.append(f"checkpoints/{which}.json unreadable (not a JSON object)")
    if not any((ckpt_dir / f"{w}.{ext}").exists() for w in ("last", "best") for ext in ("pt", "json")):
        problems.append("no checkpoint")
    return sidecars


def _read_submissions(run_dir: Path, problems: list[str]) -> list[dict[str, Any]]:
    """One dict per line of submissions.jsonl, with the evaluate scores merged in when they exist."""
    path = run_dir / SUBMISSIONS_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        problems.append(f"submissions.jsonl unreadable ({exc.strerror})")
        return []
    out = []
    for line in text.splitlines():
        record = parse_line(line)
        if record is None or not isinstance(record.get("csv"), str):
            if line.strip():
                problems.append("submissions.jsonl: unreadable line skipped")
            continue
        csv_path = Path(record["csv"])
        if not csv_path.is_absolute() and not _exists(csv_path):
            csv_path = run_dir / csv_path
        entry = {"csv": str(csv_path), "tta": record.get("tta"), "post": record.get("post"),
                 "volume_dice": None, "slice_dice": None, "global_dice": None}
        out.append(entry)
        if not _exists(csv_path):
            problems.append(f"submission {csv_path.name[:80]} no longer exists")
            continue
        submitted_at = record.get("ts") if isinstance(record.get("ts"), (int, float)) else None
        scores = _read_scores(csv_path, submitted_at, problems)
        if scores:
            for key in ("volume_dice", "slice_dice", "global_dice"):
                entry[key] = _finite(scores.get(key))
    return out


def _read_scores(csv_path: Path, submitted_at: float | None, problems: list[str]) -> dict | None:
    """The scores `evaluate` wrote beside the CSV (`<stem>.scores.json`, also `<csv>.scores.json`).

    Scores older than the submission were computed for an earlier file of the same name: ignored.
    """
    for path in (csv_path.parent / f"{csv_path.stem}.scores.json", Path(f"{csv_path}.scores.json")):
        try:
            data = loads_object(path.read_text(encoding="utf-8", errors="replace"))
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            problems.append(f"{path.name} unreadable")
            return None
        if data is None:
            problems.append(f"{path.name} unreadable (not a JSON object)")
            return None
        if submitted_at is not None and mtime < submitted_at - 1.0:
            problems.append(f"{path.name} predates the submission it sits beside; run `liverctl evaluate` again")
            return None
        if isinstance(data, dict):
            return data.get("summary") if isinstance(data.get("summary"), dict) else data
    return None


def _fill_epochs(summary: RunSummary, log: _Log, sidecars: dict[str, dict]) -> None:
    """Epochs done / planned and the best epoch's three Dice figures (events first, then sidecars)."""
    epochs = {e.get("epoch") for e in log.epoch_ends}
    summary.epochs_done = len(epochs)
    planned = [e.get("epochs") for e in log.epoch_ends if isinstance(e.get("epochs"), int)]
    summary.epochs_planned = planned[-1] if planned else _int(summary.settings.get("train.epochs"))

    best: dict | None = None
    for event in log.epoch_ends:
        vol = _finite(event.get("volume_dice"))
        if vol is not None and (best is None or vol > best["volume_dice"]):
            best = event
    if best is not None:
        summary.best_epoch = best.get("epoch")
        summary.volume_dice = _finite(best.get("volume_dice"))
        summary.slice_dice = _finite(best.get("slice_dice"))
        summary.global_dice = _finite(best.get("global_dice"))
        return
    side = sidecars.get("best") or sidecars.get("last")
    if side:
        metrics = side.get("metrics") if isinstance(side.get("metrics"), dict) else {}
        summary.volume_dice = _finite(metrics.get("volume_dice"))
        summary.slice_dice = _finite(metrics.get("slice_dice"))
        summary.global_dice = _finite(metrics.get("global_dice"))
        if summary.epochs_done == 0 and isinstance(side.get("epoch"), int):
            summary.epochs_done = side["epoch"]


def _fill_status(summary: RunSummary, log: _Log, run_dir: Path, sidecars: dict, now: float) -> None:
    if log.run_end is not None:
        summary.status = str(log.run_end.get("status") or "unknown")
        if log.torn_last_line:
            summary.problems.append("events.jsonl: half-written last line after run_end")
        return
    latest = max((t for t in (log.mtime, log.last_ts) if t is not None), default=None)
    if latest is not None and now - latest < RUNNING_WINDOW_S:
        summary.status = "running"
        return
    if not log.exists:
        summary.status = "unknown"
        return
    summary.status = "interrupted"
    if log.torn_last_line:
        summary.problems.append("events.jsonl truncated: half-written last line, no run_end (killed?)")
    else:
        summary.problems.append("no run_end event: the process stopped without saying why (killed?)")


# ------------------------------------------------------------------------------------------- settings


def flatten_config(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """{"loss": {"name": "dice"}} -> {"loss.name": "dice"}; lists become tuples (comparable, hashable)."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{dotted}."))
        elif isinstance(value, list):
            flat[dotted] = tuple(value)
        else:
            flat[dotted] = value
    return flat


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
        started=summary.started,
        path=str(summary.path),
        problems=list(summary.problems),
    )
    if summary.kind == "experiment":
        from liverctl.experiment.summary import experiment_row_extra

        row.update(experiment_row_extra(summary, varied))
    return row


def _column_value(summary: RunSummary, column: str) -> Any:
    direct = {
        "name": summary.name,
        "preset": summary.preset,
        "status": summary.status,
        "nan": summary.nan_events,
        "epochs": summary.epochs_done,
        "volume_dice": summary.volume_dice,
        "slice_dice": summary.slice_dice,
        "global_dice": summary.global_dice,
        "wall": summary.wall_seconds,
        "submitted": summary.best_submitted,
        "started": summary.started,
    }
    if column in direct:
        return direct[column]
    if column in summary.settings:
        return summary.settings[column]
    return None


def known_columns(summaries: list[RunSummary]) -> list[str]:
    keys = list(COLUMNS) + ["started"]
    for s in summaries:
        keys.extend(k for k in s.settings if k not in keys)
    return keys


def sort_runs(summaries: list[RunSummary], column: str, *, reverse: bool = False) -> list[RunSummary]:
    """Sort by a column or a dotted setting key. Numbers largest first (newest first for `started`),
    text A to Z; runs without a value go last. `reverse` flips the order of the others."""
    if column not in known_columns(summaries):
        raise LiverctlError(f"unknown column {column!r} to sort by; choose from {', '.join(known_columns(summaries))}")
    present = [s for s in summaries if _column_value(s, column) is not None]
    absent = [s for s in summaries if _column_value(s, column) is None]
    numeric = all(isinstance(_column_value(s, column), (int, float)) for s in present)
    if numeric:
        present.sort(key=lambda s: _column_value(s, column), reverse=not reverse)
    else:
        present.sort(key=lambda s: format_setting(_column_value(s, column)).lower(), reverse=reverse)
    return present + absent


_OPERATORS = ("!=", ">=", "<=", "=", ">", "<")


def filter_runs(summaries: list[RunSummary], filters: list[str]) -> list[RunSummary]:
    """Keep runs matching every filter `COLUMN OP VALUE`, OP one of = != > < >= <=.

    `=` / `!=` compare text with shell wildcards (`name=v3*`); the others compare numbers
    (`volume_dice>=0.9`). COLUMN is a table column or any dotted setting (`loss.name=tversky`).
    """
    parsed = [_parse_filter(f, summaries) for f in filters]
    return [s for s in summaries if all(_matches(s, *p) for p in parsed)]


def _parse_filter(text: str, summaries: list[RunSummary]) -> tuple[str, str, str]:
    for op in _OPERATORS:
        column, sep, value = text.partition(op)
        if sep and column.strip():
            column = column.strip()
            if column not in known_columns(summaries):
                raise LiverctlError(f"filter {text!r}: unknown column {column!r}; "
                                    f"choose from {', '.join(known_columns(summaries))}")
            if op not in ("=", "!=") and _float(value) is None:
                raise LiverctlError(f"filter {text!r}: {op} needs a number")
            return column, op, value.strip()
    raise LiverctlError(f"filter {text!r}: write COLUMN=VALUE (or != > < >= <=), e.g. preset=v5")


def _matches(summary: RunSummary, column: str, op: str, value: str) -> bool:
    actual = _column_value(summary, column)
    if op in ("=", "!="):
        text = format_setting(actual)
        hit = fnmatch.fnmatchcase(text.lower(), value.lower())
        if not hit and _finite(actual) is not None:
            hit = _float(value) is not None and math.isclose(_finite(actual), float(value))
        return hit if op == "=" else not hit
    actual = _finite(actual)
    if actual is None:
        return False
    target = float(value)
    return {">": actual > target, "<": actual < target, ">=": actual >= target, "<=": actual <= target}[op]


# ---------------------------------------------------------------------------------------- small bits


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value) if math.isfinite(value) else None
    except OverflowError:  # an integer too large for a float (config.toml can hold one)
        return None


def _exists(path: Path) -> bool:
    """Whether a path from someone else's file exists; False for one no OS call can take (NUL, too long)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first_str(*values: Any) -> str | None:
    return next((v for v in values if isinstance(v, str) and v), None)


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
