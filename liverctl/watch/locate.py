"""Finding run folders for `watch`: a run is a folder holding (or about to hold) `events.jsonl`."""

from __future__ import annotations

import os
import time
from pathlib import Path

from liverctl.errors import LiverctlError
from liverctl.runs.folder import EVENTS_FILE, no_runs, resolve_run


def _events_mtime(run_dir: Path) -> float:
    try:
        return os.stat(run_dir / EVENTS_FILE).st_mtime
    except OSError:
        return 0.0


def list_runs(runs_root: str | os.PathLike) -> list[Path]:
    """Run folders directly under `runs_root` (those with an events file), sorted by name."""
    root = Path(runs_root)
    try:
        entries = sorted(p for p in root.iterdir() if p.is_dir() and (p / EVENTS_FILE).is_file())
    except OSError:
        return []
    return entries


def newest_run(runs_root: str | os.PathLike) -> Path | None:
    """The run whose events file changed last, or None when there is none."""
    runs = list_runs(runs_root)
    return max(runs, key=_events_mtime) if runs else None


def run_labels(runs_root: str | os.PathLike) -> list[tuple[Path, str]]:
    """(run folder, one-line label) for the run picker, newest first."""
    runs = sorted(list_runs(runs_root), key=_events_mtime, reverse=True)
    return [(p, f"{p.name:<32} {time.strftime('%Y-%m-%d %H:%M', time.localtime(_events_mtime(p)))}") for p in runs]


def resolve_target(target: str | os.PathLike) -> tuple[Path, Path]:
    """(run folder, runs folder to switch within) for a path that is either a run or a runs folder.

    A folder holding runs opens its newest; any other existing folder is a run whose events file may
    not exist yet (the app waits for it).
    """
    path = Path(target)
    if not path.is_dir():
        raise LiverctlError("no such run folder (give a run folder, a run name, or a runs folder)", path=path)
    if not (path / EVENTS_FILE).exists():
        newest = newest_run(path)
        if newest is not None:
            return newest, path
    return path, path.parent


def find_run(run: str | None, runs_dir: str | os.PathLike) -> tuple[Path, Path]:
    """What `liverctl watch [RUN] --runs-dir DIR` means: (run folder, runs folder).

    RUN may be a path to a run folder or the name of a run under `runs_dir`; without RUN, the newest run.
    """
    runs_root = Path(runs_dir)
    if run is None:
        newest = newest_run(runs_root)
        if newest is None:
            raise no_runs(runs_root)  # as `liverctl runs` says it, a missing folder and an empty one apart
        return newest, runs_root
    run_dir = resolve_run(runs_root, run, need="folder")
    return resolve_target(run_dir) if run_dir == Path(run) else (run_dir, runs_root)


def find_runs(runs: list[str] | None, runs_dir: str | os.PathLike) -> tuple[Path, Path, list[Path], list[str]]:
    """What `liverctl watch [RUN...]` follows: (the first run, its runs folder, the runs overlaid, notes).

    An experiment stands for the fold it is training (or the next / last one); its note says which. `notes`
    holds one entry per run followed, in their order (the first run, then the others): the experiment's line,
    None for a run given as itself.
    """
    from liverctl.experiment.folder import current_fold

    names, notes = [], []
    for name in runs or [None]:
        fold = current_fold(name, runs_dir) if name else None
        notes.append(fold[1] if fold is not None else None)
        if fold is not None:
            name = str(fold[0])
        names.append(name)
    found = [find_run(name, runs_dir) for name in names]
    return found[0][0], found[0][1], [d for d, _ in found[1:]], notes
