"""Run folders (`runs/<name>/`): the names of the files in one, the one rule from a name or path to a run
folder (`resolve_run`), the one-writer lock (`RunLock`, `writer_alive`) and tidying after a kill.

Stdlib only: `watch` imports this and must start without torch, numpy or zarr.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from liverctl.errors import LiverctlError
from liverctl.files import (
    check_no_dangling_link,
    dangling_link,
    dangling_link_text,
    flock_retrying,
    is_temp_file,
    lock_held,
    natural_key,
    not_writable_error,
    temp_files,
    unshare_hard_link,
)
from liverctl.printable import first_line, quoted
from liverctl.suggest import hint_for, nearest

# The names of the files in a run folder, declared here only.
CONFIG_FILE = "config.toml"  # the resolved config the run trained with
EVENTS_FILE = "events.jsonl"  # the event log (liverctl.runs.events)
SUBMISSIONS_FILE = "submissions.jsonl"  # one line per submission made from the run
# a submit's line for submissions.jsonl from just before its CSV takes its place until it is appended
# (liverctl.runs.submissions): what a submit killed in between leaves for the next submit and `runs`
PENDING_SUBMISSION_FILE = ".submission.{pid}.pending"
CHECKPOINT_DIR = "checkpoints"  # best.pt / last.pt and their .json sidecars
LOCK_FILE = ".lock"  # holds {pid, host, since} of the process writing the run
# {rank, ts, message}: a torchrun rank other than 0 that failed on its own (liverctl.train.distributed)
RANK_FAILURE_FILE = ".rank-{rank}.failed"
_RANK_FAILURE_NAME = re.compile(r"\.rank-([1-9][0-9]{0,5})\.failed")


def rank_failure_path(run_dir: str | os.PathLike, rank: int) -> Path:
    """`runs/<name>/.rank-<rank>.failed`: the failure a torchrun rank other than 0 left for rank 0."""
    return Path(run_dir) / RANK_FAILURE_FILE.format(rank=rank)


def rank_failures(run_dir: str | os.PathLike) -> list[tuple[float, int, str]]:
    """(ts, rank, message) of each failure a rank other than 0 left in the folder, earliest first. They are
    removed at each start (`tidy_run_dir`), so these are the last start's; a file no rank wrote (torn,
    another form) is passed over."""
    found = []
    for path in Path(run_dir).glob(RANK_FAILURE_FILE.format(rank="*")):
        if (name := _RANK_FAILURE_NAME.fullmatch(path.name)) is None:
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            message = first_line(record["message"], 500)  # anyone's text: one line
            found.append((float(record["ts"]), int(name[1]), message))
        except (OSError, ValueError, TypeError, KeyError, RecursionError):  # none, or not one a rank wrote
            continue
    return sorted(found)


def checkpoint_path(run_dir: str | os.PathLike, which: str) -> Path:
    """`runs/<name>/checkpoints/<which>.pt` (which: best | last)."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{which}.pt"


def is_run_dir(path: Path) -> bool:
    """A folder holding events.jsonl, config.toml or checkpoints/ (what `runs` and `report` list)."""
    return path.is_dir() and any((path / p).exists() for p in (EVENTS_FILE, CONFIG_FILE, CHECKPOINT_DIR))


# What a caller of `resolve_run` needs of the folder: (test, what is missing, what to do).
_NEEDS = {
    "folder": (Path.is_dir, "", ""),
    "run": (is_run_dir, "not a run folder (no events.jsonl, config.toml or checkpoints/)",
            "`liverctl runs` lists the runs"),
    "events": (lambda p: (p / EVENTS_FILE).is_file(), "no events.jsonl yet", "has the run started?"),
    "last": (lambda p: checkpoint_path(p, "last").is_file(),
             "the run has no last checkpoint to continue from (it ended before its first epoch)",
             "start it again: the same command without --resume starts it over under its name"),
}


def resolve_run(runs_root: str | os.PathLike, name_or_path: str | os.PathLike, *, need: str = "run",
                flag: str = "") -> Path:
    """The run folder that `name_or_path` names: a path, else a name under `runs_root`; the first of the
    two that meets `need` wins.

    need: "folder" (any existing folder), "run" (holds events.jsonl, config.toml or checkpoints/),
    "events" (holds events.jsonl), "last" (holds checkpoints/last.pt). `flag` (e.g. "--resume") starts
    the error message. Raises LiverctlError, one line naming the folder, what is missing and what to do.
    """
    test, missing, todo = _NEEDS[need]
    prefix = f"{flag}: " if flag else ""
    candidates = [Path(name_or_path), Path(runs_root) / name_or_path]
    for candidate in candidates:
        if test(candidate):
            return candidate
    folder = next((p for p in candidates if p.is_dir()), None)
    if folder is not None:
        raise LiverctlError(f"{prefix}{missing}; {todo}", path=folder)
    raise no_such_run(runs_root, name_or_path, flag)


def no_such_run(runs_root: str | os.PathLike, name_or_path: str | os.PathLike, flag: str = "") -> LiverctlError:
    """The one line for a run name that is neither a folder here nor one under `runs_root` (runs, watch, report,
    submit --run, train --resume): the names nearest it among the runs and experiments there and the experiments'
    fold runs (`cv/fold-1`), else the runs there, newest first, else `no_runs_text`."""
    from liverctl.experiment.folder import (  # stdlib and liverctl only, as this module
        FOLD_PREFIX,
        is_experiment_dir,
    )

    root = Path(runs_root)
    prefix = f"{flag}: " if flag else ""
    looked = list(dict.fromkeys([Path(name_or_path), root / name_or_path]))  # one where the name is absolute
    link = next(filter(None, map(dangling_link, looked)), None)  # a path there leads through a link to nowhere
    if link is not None:
        return LiverctlError(f"{prefix}{link} {dangling_link_text(link)}; mount it, or name another run")
    there = sorted((p for p in root.glob("*") if is_run_dir(p) or is_experiment_dir(p)), key=_mtime, reverse=True)
    names = [p.name for p in there]
    folds = [f"{p.name}/{f.name}" for p in there if is_experiment_dir(p)
             for f in sorted(p.glob(f"{FOLD_PREFIX}*"), key=lambda f: natural_key(f.name)) if is_run_dir(f)]
    near = nearest(_typed_name(root, name_or_path), names + folds, n=3)
    listing = "`liverctl runs`" if root == Path("runs") else f"`liverctl runs {root}`"
    if near:
        hint = f"{hint_for(near)} {listing} lists the runs"
    elif names:
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        hint = f"the runs in {root}/, newest first: {', '.join(map(quoted, names[:5]))}{more} ({listing} lists them)"
    else:
        hint = no_runs_text(root)
    folders = f"the folders {looked[0]} and {looked[1]}" if len(looked) > 1 else f"the folder {looked[0]}"
    return LiverctlError(f"{prefix}no run {quoted(str(name_or_path))} (looked for {folders}); {hint}")


def _typed_name(root: Path, name_or_path: str | os.PathLike) -> str:
    """What the user typed as a name under `root`: `runs/cv/fodl1` -> `cv/fodl1`, `cv/fodl1` as it is, an
    absolute path elsewhere its last part."""
    path = Path(name_or_path)
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name if path.is_absolute() else str(path)


def no_runs_text(runs_root: str | os.PathLike) -> str:
    """The one wording of a runs folder with no run to name (`runs`, `watch`, `no_such_run`), one per situation:
    the folder is not there, or holds none; and what to do."""
    root = Path(runs_root)
    if (link := dangling_link(root)) is not None:
        return f"{link} {dangling_link_text(link)}; mount it, or give --runs-dir the folder that holds your runs"
    where = f"{root}/ holds no runs" if root.is_dir() else f"there is no folder {root}/"
    return f"{where}; train one with `liverctl train --preset demo`, or give --runs-dir the folder that holds yours"


def no_runs(runs_root: str | os.PathLike) -> LiverctlError:
    """`no_runs_text` as the error of a command that needs a run there (`liverctl runs`, `liverctl watch`)."""
    return LiverctlError(no_runs_text(runs_root))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0

def default_run_name(preset: str) -> str:
    return f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_dir_for(runs_root: str | Path, name: str | None, preset: str) -> Path:
    """`runs_root/<name>` for a plain `--name` (default: <preset>-<timestamp>); nothing is created.

    A name is one folder name: letters, digits and . _ + - , not only dots, so it never leaves runs_root.
    """
    name = name or default_run_name(preset)
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", name) or set(name) == {"."}:
        raise LiverctlError(f"--name {quoted(name)}: use a plain name of letters, digits and . _ + - (not . or ..)")
    return Path(runs_root) / name


def check_fresh(run_dir: Path, resumable: bool | None = None) -> str | None:
    """Refuse a run folder that holds a run to continue: continue it with --resume where it can be (`resumable`;
    default: it has a last checkpoint). A run that never saved a checkpoint (a start killed, stopped or failed in
    its first epoch: config.toml, events.jsonl, sidecars, temporary files) has nothing to continue from and
    nothing to keep: its files are removed and it starts over under its name, as does a folder of temporary
    files alone (an experiment killed while writing experiment.json). A folder that holds anything else (a
    checkpoint, another file) is refused. Call while holding the folder's `RunLock`: whoever wrote what is
    removed is gone. Returns a note for the user when an earlier run's log was removed (None otherwise)."""
    held = [p for p in run_dir.iterdir() if p.name != LOCK_FILE]
    if all(is_temp_file(p) for p in held) or (resumable is None and _never_saved(run_dir, held)):
        had_log = (run_dir / EVENTS_FILE).is_file()
        for path in held:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        if not had_log:
            return None
        return (f"run {quoted(run_dir.name)} had ended before its first checkpoint (killed, stopped or failed), so there "
                "was nothing to continue from: its log was removed and it starts over under its name")
    if resumable or (resumable is None and checkpoint_path(run_dir, "last").is_file()):
        todo = f"continue it with --resume {run_dir.name} or pick another --name"
    else:
        todo = ("it holds more than a run leaves before its first checkpoint (a checkpoint, or another file), "
                "which is kept; pick another --name")
    raise LiverctlError(f"run {quoted(run_dir.name)} already exists; {todo}", path=run_dir)


def _never_saved(run_dir: Path, held: list[Path]) -> bool:
    """Whether `held` (the folder's entries but the lock) are only what a run leaves before its first checkpoint."""
    checkpoints = run_dir / CHECKPOINT_DIR
    if checkpoints.is_dir() and any(p.suffix == ".pt" or not p.is_file() for p in checkpoints.iterdir()):
        return False
    return all(p.name in (CONFIG_FILE, EVENTS_FILE, CHECKPOINT_DIR) or is_temp_file(p)
               or _RANK_FAILURE_NAME.fullmatch(p.name) for p in held)


def discard_unstarted(run_dir: Path) -> bool:
    """Empty the folder of a new run that failed before it started (no config.toml written) of its event log,
    which holds only the run_end of a start that never happened (the user was shown why). Otherwise the name
    stays taken by a folder that `--resume` refuses (no checkpoint) and a new run refuses (it exists). The
    lock file stays: another process may be waiting on it, and a folder holding only the lock is free
    (`check_fresh`). Call while holding the run's `RunLock`; returns whether the run was discarded."""
    if (run_dir / CONFIG_FILE).exists() or (run_dir / CHECKPOINT_DIR).exists():
        return False
    (run_dir / EVENTS_FILE).unlink(missing_ok=True)
    return True


class RunLock:
    """The one writer of a run folder: an exclusive `flock` on `<run>/.lock`, held for the whole run.

    The kernel releases it when the process ends, however it ends (kill -9, OOM), so a dead run never
    blocks its own resume. A second process is refused at once, with the holder's pid, host and start.
    Only the rank that writes the run (rank 0) takes it. Use as a context manager.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fh = None

    def acquire(self) -> RunLock:
        import fcntl

        check_no_dangling_link(self.run_dir, option="--runs-dir")
        made = [p for p in (self.run_dir, self.path) if not p.exists()]  # removed again where no lock can be had
        existing = (self.run_dir / CONFIG_FILE).exists() or (self.run_dir / CHECKPOINT_DIR).exists()
        advice = (f"copy the run to a local disk and go on there (cp -r {self.run_dir} runs/ && liverctl train "
                  f"--resume runs/{self.run_dir.name})" if existing else
                  "give --runs-dir a folder on a disk that takes them (a local one)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            flock_retrying(fh.fileno(), fcntl.LOCK_EX, path=self.run_dir, advice=advice)
        except LiverctlError:
            fh.close()
            with contextlib.suppress(OSError):  # the lock file, then the run folder this made: nothing left of it
                if self.path in made:
                    self.path.unlink()
                if self.run_dir in made:
                    self.run_dir.rmdir()
            raise
        except OSError:  # BlockingIOError: another process holds it
            fh.seek(0)
            holder = _describe_holder(fh.read(4096))
            fh.close()
            raise LiverctlError(
                f"run {quoted(self.run_dir.name)} is being written by {holder}; wait for it to end or stop it "
                "(one writer per run)",
                path=self.run_dir,
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def writer_alive(run_dir: str | os.PathLike) -> bool:
    """Whether a live process holds the run's `.lock` (is writing the run) now (`files.lock_held`)."""
    return lock_held(Path(run_dir) / LOCK_FILE)


def _describe_holder(text: str) -> str:
    """"pid 123 on host since 2026-12-04 18:02:11 UTC" from the lock file (untrusted: any text)."""
    try:
        info = json.loads(text)
        pid, host, since = int(info["pid"]), str(info["host"])[:100], float(info["since"])
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    except (ValueError, TypeError, KeyError, OverflowError, OSError, RecursionError):
        return "another process (it has not said which yet)"
    return f"pid {pid} on {host} since {when}"


def tidy_run_dir(run_dir: str | Path) -> list[Path]:
    """What a killed writer left behind, made right before a (re)start; returns the files removed.

    Temporary checkpoint and config files of an interrupted write are removed (the finished file is the
    old one, whole), and so are the failures torchrun ranks left for an earlier start; a torn last line of
    events.jsonl is ended, so the next event starts a line of its own. Call only while holding the run's
    `RunLock`.
    """
    run_dir = Path(run_dir)
    # every hidden .tmp in checkpoints/: liverctl before the one atomic write named them by mkstemp (`.best.pt.XXXXXXXX.tmp`)
    removed = [*(run_dir / CHECKPOINT_DIR).glob(".*.tmp"), *temp_files(run_dir / CONFIG_FILE),
               *run_dir.glob(RANK_FAILURE_FILE.format(rank="*"))]
    for path in removed:
        path.unlink(missing_ok=True)
    events = run_dir / EVENTS_FILE
    unshare_hard_link(events, what="the event log")  # the torn line's end written to this run's log alone
    try:
        with open(events, "rb+") as fh:
            if fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
    except FileNotFoundError:
        pass
    return removed


# A folder's path quoted from someone's record (a log, experiment.json) is cut later than a name: it is the advice.
PATH_QUOTE_LIMIT = 400


def run_store(path: str | os.PathLike, run_dir: str | os.PathLike, *, experiment: bool = False,
              trained_in: Any = None) -> Path:
    """The store a run's config names (its `data.store` as given to `train`, `path`), found from here.

    A relative data.store is relative to the folder `train` ran in, so from another folder it names nothing (or
    another project's store, which is used: the folder you are in decides, as it always did). Where `path`
    names nothing here, the absolute path that the run's last `run_start` recorded for it is used, if a store is
    there: `submit --run ../proj/runs/x1` finds ../proj/store/liver.zarr. Else one line saying whose path it is
    and what to do (`pass --store PATH`).

    `experiment`: `run_dir` is an experiment, whose store cannot change on resume (its folds train with the
    data.store they were given; --store is refused there): the line says to resume from the folder it was trained
    in, `trained_in` (experiment.json's record, anyone's value) where given.
    """
    given = Path(path).expanduser()
    if given.exists():
        return given
    relative, name = not given.is_absolute(), Path(run_dir).name
    if experiment:
        where = ", relative to the folder the experiment was trained in" if relative else ""
        where += f": {quoted(trained_in, PATH_QUOTE_LIMIT)}" if relative and isinstance(trained_in, str) else ""
        todo = ("resume it from that folder" if relative else
                "put the store back there, or start a new experiment")
        raise LiverctlError(f"no store here (the data.store of experiment {name}{where}); an experiment's store "
                            f"cannot change on resume: {todo}", path=given)
    recorded = trained_store(run_dir) if relative else None
    if recorded is not None and recorded.exists():
        return recorded
    where = ", relative to the folder the run was trained in" if relative else ""
    where += f", where it was {quoted(str(recorded), PATH_QUOTE_LIMIT)}" if recorded is not None else ""
    raise LiverctlError(f"no store here (the data.store of run {name}{where}); pass --store PATH", path=given)


def trained_store(run_dir: str | os.PathLike) -> Path | None:
    """The absolute path of the store the run last started with (its last `run_start`'s `store`); None for a run
    that never started or started before liverctl recorded it, or one whose log says nothing usable."""
    from liverctl.runs.events import LineReader, parse_line, read_lines  # events imports this module

    store, reader = None, LineReader()  # a line over its limit (someone's log) is skipped unread
    try:
        with open(Path(run_dir) / EVENTS_FILE, "rb") as fh:
            for line in itertools.chain(read_lines(fh, reader), [reader.pending]):
                # only the run_start lines are parsed: 46 ms for a log of 100k steps, not the 0.8 s of all of it
                if '"run_start"' in line and (event := parse_line(line)) is not None and event.get("kind") == "run_start":
                    value = event.get("store")
                    store = value if isinstance(value, str) and os.path.isabs(value) and "\0" not in value else store
    except OSError:
        return None
    return None if store is None else Path(store)


def refuse_read_only_resume(run_dir: str | Path, runs_root: str | Path, what: str = "run") -> None:
    """`--resume` continues a run (or an experiment) in its own folder: one attached read-only (a teammate's
    runs in /kaggle/input) is refused before anything is loaded, with the copy to make and resume instead."""
    run_dir = Path(run_dir)
    exc = not_writable_error(run_dir)
    if exc is None:
        return
    root = Path(runs_root)
    # the copy goes to --runs-dir, unless the run already sits there (then --runs-dir is the read-only one)
    dest = Path("runs") if run_dir.resolve().parent == root.resolve() else root
    # a name not taken there: `cp -r X runs/` into an existing runs/x merged the two runs' files, and with no
    # runs/ made runs/ itself the copy
    names = (run_dir.name, *(f"{run_dir.name}-copy{'' if n == 1 else n}" for n in range(1, 100)))
    copy = next((dest / name for name in names if not (dest / name).exists()), dest / f"{run_dir.name}-{os.getpid()}")
    writable = f" && chmod -R u+w {copy}" if _copy_stays_read_only(run_dir) else ""
    raise LiverctlError(
        f"--resume continues {'an' if what[0] in 'aeiou' else 'a'} {what} in its own folder, and this one cannot be written ({exc.strerror or exc}); "
        f"copy it to a folder you can write to and resume the copy: "
        f"`mkdir -p {dest} && cp -r {run_dir} {copy}{writable} && liverctl train --resume {copy}`",
        path=run_dir)


def _copy_stays_read_only(folder: Path) -> bool:
    """Whether `cp -r folder` leaves this user a copy it cannot write: cp gives each file and folder it makes the
    source's mode (less the umask), so one without its owner's write bit stays so; root writes it all the same."""
    import stat

    geteuid = getattr(os, "geteuid", None)
    if geteuid is None or geteuid() == 0:
        return False
    for parent, dirs, files in os.walk(folder):
        for path in (parent, *(os.path.join(parent, name) for name in (*dirs, *files))):
            with contextlib.suppress(OSError):  # gone meanwhile: nothing to copy
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and not mode & stat.S_IWUSR:
                    return True
    return False


def find_resume_run(runs_root: str | Path, run: str) -> Path:
    """The folder of `--resume RUN` (a name under runs_root or a path) with a last checkpoint."""
    run_dir = resolve_run(runs_root, run, need="folder", flag="--resume")
    refuse_read_only_resume(run_dir, runs_root)
    if not checkpoint_path(run_dir, "last").is_file():
        with RunLock(run_dir):  # a run still in its first epoch is refused as busy, not as checkpoint-less
            pass
    return resolve_run(runs_root, run_dir, need="last", flag="--resume")
