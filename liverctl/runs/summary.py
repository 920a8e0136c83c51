"""One `RunSummary` per run folder, read from files only: what `liverctl runs`, `report` and the consistency
of the three rest on.

A run folder (`runs/<name>/`, see ARCHITECTURE.md) is summarised from `config.toml`, `events.jsonl`
(folded by `liverctl.runs.history`, whose rules for the best epoch and the status this module applies),
the `checkpoints/*.json` sidecars and `submissions.jsonl` (with the `<csv>.scores.json` that `evaluate`
writes beside each submission). Nothing here imports torch or numpy, so listing hundreds of runs stays fast.

Whatever is missing or odd (no config, a torn last line, no checkpoint, an unknown event schema) is
recorded in `RunSummary.problems` instead of raising: one broken run must not hide the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.errors import LiverctlError
from liverctl.plural import plural
from liverctl.printable import first_line, quoted
from liverctl.runs.checkpoint import FORMAT as CHECKPOINT_FORMAT
from liverctl.runs.events import EVENTS_FILE, LineReader, loads_object, parse_line, read_lines
from liverctl.runs.folder import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    SUBMISSIONS_FILE,
    is_run_dir,
    no_runs,
    no_such_run,
    rank_failures,
    writer_alive,
)
from liverctl.runs.history import (
    RunHistory,
    as_int,
    best_figures,
    dice,
    end_message,
    finite,
    read_history,
    run_status,
    schema_version,
)
from liverctl.runs.submissions import unrecorded_lines

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


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
    # Why a run that did not complete ended: run_end's message (`liverctl.runs.history.end_message`; an
    # experiment's: experiment.json's), "" when it gave none; None for a completed, running or interrupted one
    ended_because: str | None = None
    end_step: int | None = None  # run_end's step
    kind: str = "run"  # or "experiment" (liverctl/experiment/summary.py): its folds beneath, cv figures
    folds: list[RunSummary] = field(default_factory=list)
    # An experiment's epochs per planned fold, in its order (0 for a fold not started); its `epochs_done` is the
    # fewest of them and `epochs_planned` those of one fold: an epochs column means one model's epochs in every row
    fold_epochs: list[int] = field(default_factory=list)
    cv: dict[str, Any] = field(default_factory=dict)

    @property
    def best_submitted(self) -> float | None:
        """The best volume Dice among the evaluated submissions of this run's own checkpoint as it is now (None
        when none was scored): not those of an ensemble it was part of, nor those of a checkpoint since replaced."""
        return best_score(self.submissions, OWN)

    @property
    def best_submitted_in_ensemble(self) -> float | None:
        """The best volume Dice among the evaluated submissions of ensembles with this run's current checkpoint."""
        return best_score(self.submissions, ENSEMBLE)


# What a submission in a run's submissions.jsonl was made with (`made_with` of each `RunSummary.submissions`):
OWN = "own"  # the run's checkpoint alone (an experiment's: its folds alone), the one there now
ENSEMBLE = "ensemble"  # an ensemble the run's checkpoint as it is now was part of
STALE = "stale"  # a checkpoint since replaced (a resume wrote a new best.pt): its score is of weights not there now


def best_score(submissions: list[dict[str, Any]], made_with: str) -> float | None:
    scores = [s["volume_dice"] for s in submissions if s.get("made_with", OWN) == made_with
              and s.get("volume_dice") is not None]
    return max(scores) if scores else None


# --------------------------------------------------------------------------------------------- reading


def _is_listed(path: Path) -> bool:
    from liverctl.experiment.folder import is_experiment_dir

    return is_run_dir(path) or is_experiment_dir(path)


def _summarize(path: Path) -> RunSummary:
    from liverctl.experiment.folder import is_experiment_dir
    from liverctl.experiment.summary import summarize_experiment

    return summarize_experiment(path) if is_experiment_dir(path) else summarize_run(path)


def find_run_dirs(root: str | os.PathLike, runs_root: str | os.PathLike = "runs") -> list[Path]:
    """The run folders directly under `root` (or `root` itself when it is one). A `root` that is no folder here
    but names a run or experiment under `runs_root` ('liverctl runs cv1', as watch and report take a name) is
    refused with the path that lists it."""
    root = Path(root)
    if not root.exists():
        named = Path(runs_root) / root
        if not root.is_absolute() and named.is_dir() and _is_listed(named):
            from liverctl.experiment.folder import is_experiment_dir

            kind = "an experiment" if is_experiment_dir(named) else "a run"
            raise LiverctlError(f"no such folder; {quoted(str(root))} is {kind} in {quoted(str(runs_root))}, and "
                                f"RUNS_DIR is a folder of runs or a run's folder: `liverctl runs {named}`", path=root)
        if root == Path(runs_root) or not Path(runs_root).is_dir():  # before any training, or a mistyped --runs-dir:
            raise no_runs(root)  # no runs folder to look a name up in
        raise no_such_run(runs_root, root)
    if not root.is_dir():
        raise LiverctlError("not a folder of runs", path=root)
    if _is_listed(root):
        return [root]
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and _is_listed(p))


def scan_runs(root: str | os.PathLike) -> list[RunSummary]:
    """Summaries of every run under `root`, newest first. Raises LiverctlError when there is none."""
    dirs = find_run_dirs(root)
    if not dirs:
        raise no_runs(root)
    summaries = [_summarize_or_problem(d) for d in dirs]
    return sorted(summaries, key=lambda s: (s.started is None, -(s.started or 0.0)))  # newest first


def _summarize_or_problem(run_dir: Path) -> RunSummary:
    """`summarize_run`, and should a run folder still defeat it, a row saying so: never hide the others."""
    try:
        return _summarize(run_dir)
    except Exception as exc:  # noqa: BLE001 - one unreadable run must not take down the table
        return RunSummary(name=run_dir.name, path=run_dir,
                          problems=[f"could not be read ({type(exc).__name__}: {str(exc)[:100]})"])


def summarize_run(run_dir: str | os.PathLike) -> RunSummary:
    """Read one run folder into a RunSummary; never raises for a damaged run (see `problems`).

    The status does not depend on the clock: the run's lock says whether it is being written.
    """
    run_dir = Path(run_dir)
    summary = RunSummary(name=run_dir.name, path=run_dir)
    config = _read_config(run_dir, summary.problems)
    history = read_history(run_dir / EVENTS_FILE, summary.problems)
    sidecars = _read_sidecars(run_dir, summary.problems)
    if config is None:
        config = (history.run_start or {}).get("config") or (sidecars.get("last") or {}).get("config")
        if isinstance(config, dict):
            missing = "" if (run_dir / CONFIG_FILE).exists() else "config.toml missing; "  # else: said above
            summary.problems.append(f"{missing}settings taken from the event log/checkpoint")
    summary.settings = flatten_config(config) if isinstance(config, dict) else {}
    summary.preset = _first_str(
        (history.run_start or {}).get("preset"),
        config.get("preset") if isinstance(config, dict) else None,
        summary.settings.get("train.preset"),
        (sidecars.get("last") or {}).get("preset"),
    )
    summary.schema_version = schema_version(history, summary.problems)
    summary.started, summary.updated = history.first_ts, history.last_ts
    summary.wall_seconds = history.wall_seconds
    summary.nan_events = history.nan_events
    _fill_epochs(summary, history, sidecars)
    _fill_status(summary, history, writer_alive(run_dir), rank_failures(run_dir))
    if summary.status == "running" and summary.epochs_done == 0 and "no checkpoint" in summary.problems:
        summary.problems.remove("no checkpoint")  # the first one comes at the end of the first epoch
    summary.submissions = read_submissions(run_dir, summary.problems)
    if summary.started is None:
        try:
            summary.started = run_dir.stat().st_mtime
        except OSError:
            pass
    return summary


def _read_config(run_dir: Path, problems: list[str]) -> dict | None:
    path = run_dir / CONFIG_FILE
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"config.toml unreadable ({first_line(exc, 120) or type(exc).__name__})")
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
                problems.append(f"checkpoints/{which}.json has format {quoted(fmt)}, not {CHECKPOINT_FORMAT!r}; "
                                "read as best we can")
        else:
            problems.append(f"checkpoints/{which}.json unreadable (not a JSON object)")
    if not any((ckpt_dir / f"{w}.{ext}").exists() for w in ("last", "best") for ext in ("pt", "json")):
        problems.append("no checkpoint")
    return sidecars




def read_submissions(run_dir: Path, problems: list[str]) -> list[dict[str, Any]]:
    """One dict per line of submissions.jsonl, with the evaluate scores merged in when they exist."""
    path = run_dir / SUBMISSIONS_FILE
    reader = LineReader()  # a line over MAX_LINE_BYTES is skipped unread, as the event log's
    try:
        with open(path, "rb") as fh:
            lines = [*read_lines(fh, reader), reader.pending]
    except FileNotFoundError:
        lines = []
    except OSError as exc:
        problems.append(f"submissions.jsonl unreadable ({exc.strerror})")
        return []
    lines += unrecorded_lines(run_dir, lines)  # put in place by a submit killed before it recorded them
    out, unreadable = [], 0
    sidecars: dict[Path, Any] = {}
    for line in lines:
        record = parse_line(line)
        if record is None or not isinstance(record.get("csv"), str):
            unreadable += bool(line.strip())
            continue
        csv_path = Path(record["csv"])
        if not csv_path.is_absolute() and not exists(csv_path):
            csv_path = run_dir / csv_path
        entry = {"csv": str(csv_path), "tta": record.get("tta"), "post": record.get("post"),
                 "volume_dice": None, "slice_dice": None, "global_dice": None,
                 "runs": _member_count(record), "made_with": _made_with(record, run_dir, sidecars)}
        out.append(entry)
        if entry["made_with"] == STALE:
            problems.append(f"submission {csv_path.name[:80]} was made with a checkpoint since replaced; "
                            "its score is not shown")
        if not exists(csv_path):
            problems.append(f"submission {csv_path.name[:80]} no longer exists")
            continue
        submitted_at = record.get("ts") if isinstance(record.get("ts"), (int, float)) else None
        sha256 = record.get("sha256") if isinstance(record.get("sha256"), str) else None
        scores = _read_scores(csv_path, submitted_at, problems, sha256)
        if scores:
            for key in ("volume_dice", "slice_dice", "global_dice"):
                entry[key] = dice(scores.get(key))
    if unreadable:
        problems.append(f"submissions.jsonl: {plural(unreadable, 'unreadable line')} skipped")
    return out


def _member_count(record: dict) -> int:
    """How many runs' checkpoints made the submission (older records: their `runs`; older still: one)."""
    for key in ("members", "runs"):
        if isinstance(record.get(key), list) and record[key]:
            return len(record[key])
    return 1


def _made_with(record: dict, run_dir: Path, sidecars: dict[Path, Any]) -> str:
    """OWN, ENSEMBLE or STALE (see there). A record of a member's checkpoint (its save time, `submit` records it
    since it records `members`) that another checkpoint's sidecar now holds the place of is STALE; records
    without one are judged by their `runs` alone."""
    members = record.get("members") if isinstance(record.get("members"), list) else []
    which = record.get("which") if record.get("which") in ("best", "last") else "best"
    for member in members:
        if not isinstance(member, dict) or not isinstance(member.get("saved_at"), (int, float)):
            continue
        folder = _member_folder(member.get("run"), run_dir)
        if folder is None:
            continue  # moved away: cannot tell
        sidecar = folder / CHECKPOINT_DIR / f"{which}.json"
        if sidecar not in sidecars:
            try:
                sidecars[sidecar] = loads_object(sidecar.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                sidecars[sidecar] = None
        now = sidecars[sidecar].get("saved_at") if isinstance(sidecars[sidecar], dict) else None
        if now != member["saved_at"]:
            return STALE
    runs = record.get("runs") if isinstance(record.get("runs"), list) else []
    if len(runs) <= 1:
        return OWN
    experiments = record.get("experiments") if isinstance(record.get("experiments"), list) else []
    if len(experiments) == 1 and all(isinstance(r, str) and Path(r).parent.name == run_dir.name for r in runs):
        return OWN  # an experiment's submission made with its folds alone
    return ENSEMBLE


def _member_folder(recorded: Any, run_dir: Path) -> Path | None:
    """The folder of a run a submission record names: where it was, else (runs moved or copied together) by its
    name beside `run_dir` or inside it (an experiment's fold), or `run_dir` itself."""
    if not isinstance(recorded, str) or not recorded:
        return None
    name = Path(recorded).name
    return next((f for f in (Path(recorded), run_dir / name, run_dir.parent / name) if exists(f / CHECKPOINT_DIR)),
                None)


def _read_scores(csv_path: Path, submitted_at: float | None, problems: list[str],
                 sha256: str | None = None) -> dict | None:
    """The scores `evaluate` wrote beside the CSV (`<stem>.scores.json`, also `<csv>.scores.json`).

    Scores older than the submission were computed for an earlier file of the same name, and scores of a
    file with another sha256 than the submission's for a later one that replaced it: both ignored.
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
        scored = data.get("sha256") if isinstance(data, dict) else None
        if isinstance(scored, str) and sha256 is not None and scored != sha256:
            problems.append(f"{path.name} scores a later file of that name, not this run's submission")
            return None
        if isinstance(data, dict):
            return data.get("summary") if isinstance(data.get("summary"), dict) else data
    return None




def _fill_epochs(summary: RunSummary, history: RunHistory, sidecars: dict[str, dict]) -> None:
    """Epochs done / planned and the best epoch's three Dice figures (events first, then sidecars)."""
    summary.epochs_done = history.epochs_done
    summary.epochs_planned = history.epochs_planned or as_int(summary.settings.get("train.epochs"))
    summary.best_epoch, figures = best_figures(history)
    if not figures:
        side = sidecars.get("best") or sidecars.get("last")
        if not side:
            return
        figures = side.get("metrics") if isinstance(side.get("metrics"), dict) else {}
        if summary.epochs_done == 0 and as_int(side.get("epoch")) is not None:
            summary.epochs_done = side["epoch"]
    summary.volume_dice = finite(figures.get("volume_dice"))
    summary.slice_dice = finite(figures.get("slice_dice"))
    summary.global_dice = finite(figures.get("global_dice"))


def _fill_status(summary: RunSummary, history: RunHistory, alive: bool, failures: list) -> None:
    summary.status = run_status(history, alive, bool(failures))
    if summary.status == "running":
        return
    if history.run_end is not None:
        summary.ended_because = end_message(history)
        summary.end_step = as_int(history.run_end.get("step"))
        if history.torn_last_line:
            summary.problems.append("events.jsonl: half-written last line after run_end")
    elif summary.status == "failed":
        _, rank, message = failures[0]
        if message.startswith("rank 0 died"):  # the writer itself was killed (`distributed.dead_rank`)
            summary.problems.append(f"no run_end event: {message} (as rank {rank} found)")
        else:
            summary.problems.append(f"no run_end event: rank {rank} failed ({message}), and rank 0 ended before it "
                                    "wrote the run's end (killed by torchrun?)")
    elif summary.status == "interrupted":
        if history.torn_last_line:
            summary.problems.append("events.jsonl truncated: half-written last line, no run_end (killed?)")
        else:
            summary.problems.append("no run_end event: the process stopped without saying why (killed?)")


def flatten_config(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """{"loss": {"name": "dice"}} -> {"loss.name": "dice"}; lists become tuples (comparable, hashable).
    Without recursion: a config.toml of tables 3000 deep (`[a0.a1. ... .a2999]`, valid TOML) is read."""
    flat: dict[str, Any] = {}
    stack = [(prefix, iter(cfg.items()))]
    while stack:
        where, items = stack[-1]
        for key, value in items:
            dotted = f"{where}{key}"
            if isinstance(value, dict):
                stack.append((f"{dotted}.", iter(value.items())))
                break
            flat[dotted] = tuple(value) if isinstance(value, list) else value
        else:
            stack.pop()
    return flat



def exists(path: Path) -> bool:
    """Whether a path from someone else's file exists; False for one no OS call can take (NUL, too long)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False




def _first_str(*values: Any) -> str | None:
    return next((v for v in values if isinstance(v, str) and v), None)

