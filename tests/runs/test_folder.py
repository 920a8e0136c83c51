"""The run folder: one rule from a name or path to a folder (`resolve_run`), and whether a writer holds it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liverctl.errors import LiverctlError
from liverctl.runs.folder import LOCK_FILE, RunLock, checkpoint_path, resolve_run, writer_alive


def _run(root, name, *files):
    run = root / name
    run.mkdir(parents=True)
    for f in files:
        (run / f).parent.mkdir(parents=True, exist_ok=True)
        (run / f).write_text("")
    return run


def test_resolve_run_takes_a_path_or_a_name_under_the_runs_folder(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    run = _run(root, "a", "events.jsonl")
    assert resolve_run(root, "a") == root / "a"
    assert resolve_run(root, str(run)) == run
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()  # ./a exists but is not a run: the run under runs/ is the one meant
    assert resolve_run(root, "a", need="run") == root / "a"
    assert resolve_run(root, "a", need="folder") == Path("a")  # any folder will do: the path comes first


def test_resolve_run_needs_name_what_is_missing(tmp_path):
    root = tmp_path / "runs"
    _run(root, "fresh", "config.toml")
    _run(root, "empty")
    with pytest.raises(LiverctlError, match=r"fresh: --resume: .*no last checkpoint.*start it again: the same command without --resume"):
        resolve_run(root, "fresh", need="last", flag="--resume")
    with pytest.raises(LiverctlError, match=r"empty: no events.jsonl yet"):
        resolve_run(root, "empty", need="events")
    with pytest.raises(LiverctlError, match=r"empty: not a run folder .*`liverctl runs`"):
        resolve_run(root, "empty", need="run")
    with pytest.raises(LiverctlError, match=r"no run 'ghost' \(looked for the folders .*the runs in .*: 'fresh' "):
        resolve_run(root, "ghost")  # 'empty' is a folder, not a run
    # newest first, as `runs` lists them ("recent runs: x1, tl, ff, tl2, live" ended with the newest)
    for age, name in enumerate(["a", "b", "c", "d", "e", "f"]):
        _run(root, name, "config.toml")
        newer = time.time() + 1000 - age * 100  # than "fresh" and "empty" above
        os.utime(root / name, (newer, newer))
    with pytest.raises(LiverctlError) as info:
        resolve_run(root, "ghost")
    assert str(info.value).endswith(f"; the runs in {root}/, newest first: 'a', 'b', 'c', 'd', 'e' and 2 more "
                                    f"(`liverctl runs {root}` lists them)")
    assert resolve_run(root, "empty", need="folder") == root / "empty"
    (checkpoint_path(root / "fresh", "last")).parent.mkdir()
    checkpoint_path(root / "fresh", "last").write_bytes(b"")
    assert resolve_run(root, "fresh", need="last") == root / "fresh"


def test_writer_alive_follows_the_lock_not_the_lock_file(tmp_path):
    run = tmp_path / "r"
    assert not writer_alive(run)  # no folder, no lock file
    with RunLock(run):
        assert writer_alive(run)
    assert (run / LOCK_FILE).exists() and not writer_alive(run)  # the file stays; nobody holds it


def test_writer_alive_sees_another_process_and_its_death(tmp_path):
    run = tmp_path / "r"
    code = ("import sys, time; from liverctl.runs.folder import RunLock\n"
            f"lock = RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert writer_alive(run)
        with pytest.raises(LiverctlError, match="being written by pid"):
            RunLock(run).acquire()
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while writer_alive(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not writer_alive(run)  # killed: the kernel released the lock


def test_a_probe_does_not_refuse_a_writer(tmp_path):
    run = tmp_path / "r"
    RunLock(run).acquire().release()
    import fcntl

    with open(run / LOCK_FILE, "rb") as probe:
        fcntl.flock(probe.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)  # as writer_alive does, held a moment
        import threading

        threading.Timer(0.03, lambda: fcntl.flock(probe.fileno(), fcntl.LOCK_UN)).start()
        with RunLock(run):  # retried until the probe let go
            assert writer_alive(run)


def test_tidying_removes_the_config_a_killed_start_was_writing(tmp_path):
    """A run killed while it wrote config.toml left `.config.toml.<pid>.tmp`, which `tidy_run_dir` (looking for
    `config.toml.tmp`, a name no writer uses) left in the folder for good, though it says it removes it. The
    leftover here is made by the atomic write itself, killed by SIGKILL before its rename."""
    from liverctl.runs.folder import CONFIG_FILE, EVENTS_FILE, tidy_run_dir

    run = _run(tmp_path, "r", EVENTS_FILE)
    (run / CONFIG_FILE).write_text("kept = 1\n")
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from liverctl.files import atomic_open\n"
        "with atomic_open(sys.argv[1]) as fh:\n"
        "    fh.write('half = ')\n"
        "    fh.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"), str(run / CONFIG_FILE)])
    assert killed.returncode == -9
    left = [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].name.startswith(f".{CONFIG_FILE}.")
    assert tidy_run_dir(run) == left
    assert sorted(p.name for p in run.iterdir()) == [CONFIG_FILE, EVENTS_FILE]
    assert (run / CONFIG_FILE).read_text() == "kept = 1\n"


def test_a_start_killed_while_it_wrote_its_first_file_leaves_a_fresh_folder(tmp_path):
    """A run or experiment killed while it wrote its first file (config.toml; experiment.json) left only that
    file's `.NAME.<pid>.tmp` beside the lock, and the same command again was refused: "run 'x' already exists; it
    has nothing to continue from ...; delete the folder" (an experiment: "continue it with --resume", which
    found no experiment.json). The leftover here is made by the atomic write itself, killed by SIGKILL before
    its rename. Now the folder counts as fresh and the leftover is removed."""
    from liverctl.runs.folder import check_fresh

    for first in ("config.toml", "experiment.json"):
        run = _run(tmp_path, first, LOCK_FILE)
        killed = subprocess.run([sys.executable, "-c", (
            "import os, signal, sys\n"
            "from liverctl.files import atomic_open\n"
            "with atomic_open(sys.argv[1]) as fh:\n"
            "    fh.write('half')\n"
            "    fh.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"), str(run / first)])
        assert killed.returncode == -9 and len(list(run.iterdir())) == 2
        with RunLock(run):
            assert check_fresh(run, resumable=first == "experiment.json" and (run / first).is_file()) is None
        assert [p.name for p in run.iterdir()] == [LOCK_FILE]


def test_a_run_killed_before_its_first_checkpoint_starts_over_under_its_name(tmp_path):
    """A run SIGKILLed in its first epoch leaves config.toml and events.jsonl, no checkpoint. Started again under
    its name it was told "already exists; continue it with --resume", and `--resume` told it "no last checkpoint
    ...; start a new run": each sent the user to the other. Then both said "pick another --name, or delete the
    folder": a manual cleanup before the same command worked again. Now the same command starts it over (there
    is nothing to continue from and nothing to keep), and `--resume` says so. A folder holding anything else is
    still refused, and a run with a last checkpoint (or an experiment, `resumable`) is still sent to --resume."""
    from liverctl.runs.folder import CHECKPOINT_DIR, CONFIG_FILE, EVENTS_FILE, check_fresh, find_resume_run

    root = tmp_path / "runs"
    killed = _run(root, "k1", CONFIG_FILE, EVENTS_FILE, LOCK_FILE, ".rank-1.failed", f".{CONFIG_FILE}.99.tmp")
    (killed / CHECKPOINT_DIR).mkdir()
    (killed / CHECKPOINT_DIR / ".last.pt.99.tmp").write_bytes(b"half")
    with pytest.raises(LiverctlError) as resume:
        find_resume_run(root, "k1")
    assert str(resume.value).endswith("start it again: the same command without --resume starts it over under its "
                                      "name")
    assert "its log was removed and it starts over under its name" in check_fresh(killed)
    assert [p.name for p in killed.iterdir()] == [LOCK_FILE]
    kept = _run(root, "k2", CONFIG_FILE, EVENTS_FILE, "notes.txt")
    with pytest.raises(LiverctlError) as fresh:
        check_fresh(kept)
    assert str(fresh.value) == (f"{kept}: run 'k2' already exists; it holds more than a run leaves before its first "
                                "checkpoint (a checkpoint, or another file), which is kept; pick another --name")
    with pytest.raises(LiverctlError, match="already exists; continue it with --resume k2 or pick another --name"):
        check_fresh(kept, resumable=True)
    (kept / "notes.txt").unlink()
    checkpoint_path(kept, "best").parent.mkdir()
    checkpoint_path(kept, "best").write_bytes(b"")  # killed between best.pt and last.pt: a model to keep
    with pytest.raises(LiverctlError, match="already exists; it holds more than"):
        check_fresh(kept)
    checkpoint_path(kept, "last").write_bytes(b"")
    with pytest.raises(LiverctlError, match="already exists; continue it with --resume k2 or pick another --name"):
        check_fresh(kept)
    assert find_resume_run(root, "k2") == kept


def _start_lines(run, *stores):
    """events.jsonl of `run` holding one run_start per store recorded (anything: someone's log), a step between."""
    import json

    lines = []
    for store in stores:
        lines += [json.dumps({"v": 1, "ts": 1.0, "kind": "run_start", "store": store}), '{"v": 1, "kind": "step"}']
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")


def test_a_relative_store_is_found_where_the_run_recorded_it_from_another_folder(tmp_path, monkeypatch):
    """A relative data.store (store/liver.zarr) names nothing from another folder than the one train ran in: the
    absolute path the run's last run_start recorded is used there; the folder you are in still decides first."""
    from liverctl.runs.folder import run_store, trained_store

    trained, other = tmp_path / "proj" / "store" / "liver.zarr", tmp_path / "proj2" / "store" / "liver.zarr"
    trained.mkdir(parents=True)
    run = _run(tmp_path / "proj" / "runs", "x1")
    _start_lines(run, str(other), str(trained))  # resumed from another folder: the last start counts
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert trained_store(run) == trained
    assert run_store("store/liver.zarr", run) == trained
    (elsewhere / "store" / "liver.zarr").mkdir(parents=True)
    assert run_store("store/liver.zarr", run) == Path("store/liver.zarr")  # one here: as it always was


def test_a_store_neither_here_nor_where_recorded_is_one_line_naming_both(tmp_path, monkeypatch):
    from liverctl.runs.folder import run_store, trained_store

    run = _run(tmp_path / "runs", "x1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LiverctlError, match=r"^store/liver.zarr: no store here \(the data.store of run x1, relative "
                                            r"to the folder the run was trained in\); pass --store PATH$"):
        run_store("store/liver.zarr", run)  # no log: an older run, or one that never started
    gone = tmp_path / "moved" / "store" / "liver.zarr"
    _start_lines(run, str(gone))
    with pytest.raises(LiverctlError, match=rf"^store/liver.zarr: no store here \(the data.store of run x1, relative "
                                            rf"to the folder the run was trained in, where it was '{gone}'\); pass --store PATH$"):
        run_store("store/liver.zarr", run)
    with pytest.raises(LiverctlError, match=r"^/abs/none: no store here \(the data.store of run x1\)"):
        run_store("/abs/none", run)  # an absolute data.store is never looked for elsewhere
    for bad in ("relative/store", 7, None, ["/x"], "/a\0b"):  # someone's log: only an absolute path counts
        _start_lines(run, bad)
        assert trained_store(run) is None
    (run / "events.jsonl").write_bytes(b'\xff\xfe{"kind": "run_start"\n' + b"x" * 100)
    assert trained_store(run) is None


@pytest.mark.parametrize("args, prefix", [
    (["runs", "v5-tversy"], ""), (["report", "v5-tversy"], ""), (["watch", "v5-tversy", "--once"], ""),
    (["submit", "--run", "v5-tversy"], "--run: "), (["train", "--resume", "v5-tversy"], "--resume: "),
])
def test_a_name_that_is_no_run_gets_the_nearest_names_from_every_command(tmp_path, monkeypatch, args, prefix):
    """`liverctl runs nope` said "nope: no such folder; train a run first" where runs/ held runs, while watch,
    report, submit --run and train --resume said "no run 'nope'" with the five newest folders, however near a
    name was to the one meant. All now say, from one place (`no_such_run`), the nearest names."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    monkeypatch.chdir(tmp_path)
    for name in ("v3-base", "v5-tversky", "v5-lovasz"):
        _run(tmp_path / "runs", name, "events.jsonl")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {prefix}no run 'v5-tversy' (looked for the folders v5-tversy and "
                                     "runs/v5-tversy); did you mean 'v5-tversky'? `liverctl runs` lists the runs")


def test_a_name_near_no_run_lists_the_runs_there_or_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for age, name in enumerate(["v3-base", "v5-tversky"]):
        run = _run(tmp_path / "runs", name, "config.toml")
        os.utime(run, (1000 - age, 1000 - age))
    (tmp_path / "runs" / "notes").mkdir()  # a folder that is no run is not offered
    (tmp_path / "runs" / "cv").mkdir()
    (tmp_path / "runs" / "cv" / "experiment.json").write_text("{}")  # an experiment is
    with pytest.raises(LiverctlError) as far:
        resolve_run("runs", "unet")
    assert str(far.value).endswith("; the runs in runs/, newest first: 'cv', 'v3-base', 'v5-tversky' "
                                   "(`liverctl runs` lists them)")
    with pytest.raises(LiverctlError, match=r"; there is no folder elsewhere/; train one with `liverctl train "
                                            r"--preset demo`, or give --runs-dir the folder that holds yours$"):
        resolve_run("elsewhere", "unet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LiverctlError, match=r"; empty/ holds no runs; train one with"):
        resolve_run("empty", "unet")


@pytest.mark.parametrize("typed, meant", [("cv/fodl-1", "cv/fold-1"), ("fold1", "cv/fold-1"),
                                          ("runs/cv/fodl-1", "cv/fold-1"), ("cv/fold-12", "cv/fold-12")])
def test_a_mistyped_fold_run_gets_the_experiments_fold_runs_as_its_nearest_names(tmp_path, monkeypatch, typed, meant):
    """`liverctl watch cv/fodl-1` (or `fold1`) was offered only the top-level names ('cv', ...), never the fold run
    meant: an experiment's fold runs (`cv/fold-1`, which every command takes as a name) are among the names now."""
    monkeypatch.chdir(tmp_path)
    _run(tmp_path / "runs", "v3-base", "config.toml")
    (tmp_path / "runs" / "cv").mkdir()
    (tmp_path / "runs" / "cv" / "experiment.json").write_text("{}")
    for k in (0, 1, 2, 12):
        _run(tmp_path / "runs" / "cv", f"fold-{k}", "events.jsonl")
    if typed == meant:
        assert resolve_run("runs", typed) == Path("runs") / meant  # the name itself is a run: no hint to give
        return
    with pytest.raises(LiverctlError, match=rf"did you mean '{meant}'"):
        resolve_run("runs", typed)


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_no_runs_is_said_one_way_by_runs_watch_and_a_run_name(tmp_path, monkeypatch, state):
    """`runs` said 'no such folder; train a run first' or 'no runs here (...)', `watch` 'no such folder (--runs-dir
    names another)' or 'no runs here yet', a run name 'there is no folder runs/' or 'runs/ holds no runs': six
    wordings of two situations. Now one per situation (`folder.no_runs_text`), each saying what to do."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    monkeypatch.chdir(tmp_path)
    if state == "empty":
        (tmp_path / "runs").mkdir()
    where = "runs/ holds no runs" if state == "empty" else "there is no folder runs/"
    line = f"{where}; train one with `liverctl train --preset demo`, or give --runs-dir the folder that holds yours"
    for args in (["runs"], ["watch", "--once"], ["report", "v5"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip().endswith(line), (args, result.stderr)


@pytest.mark.parametrize("euid, mode, chmod", [(1000, 0o444, True), (0, 0o444, False), (1000, 0o644, False)])
def test_the_copy_to_resume_is_made_writable_only_where_cp_keeps_it_read_only(tmp_path, monkeypatch, euid, mode,
                                                                               chmod):
    """The read-only resume's advice `mkdir -p runs && cp -r X runs/x && liverctl train --resume runs/x` failed for
    a user other than root where X's files are read-only: cp keeps their modes. `chmod -R u+w runs/x` is now one of
    the steps there, and only there (root writes the copy all the same; a writable mode needs none)."""
    import errno
    import tempfile

    from liverctl.runs.folder import refuse_read_only_resume

    run = _run(tmp_path / "input", "x", "config.toml", "events.jsonl")
    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):  # what a read-only mount answers, to root too
        if Path(dir) == run:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    (run / "config.toml").chmod(mode)
    runs = tmp_path / "runs"
    with pytest.raises(LiverctlError) as refused:
        refuse_read_only_resume(run, runs)
    step = f" && chmod -R u+w {runs / 'x'}" if chmod else ""
    assert str(refused.value).endswith(f"`mkdir -p {runs} && cp -r {run} {runs / 'x'}{step} && liverctl train "
                                       f"--resume {runs / 'x'}`")


def test_a_run_on_a_file_system_without_locks_is_one_line_not_another_writer(tmp_path, monkeypatch):
    """`train` into a runs folder on NFS without locks (flock: ENOLCK) was refused with 'run 'r' is being written
    by another process (it has not said which yet); wait for it to end', though nothing else ran. Now it says
    the file system takes no locks and where to go instead."""
    import errno
    import fcntl

    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)
    with pytest.raises(LiverctlError, match=r"r: cannot lock it \(No locks available\): its file system takes no "
                                            r"locks .*; give --runs-dir a folder on a disk that takes them"):
        RunLock(tmp_path / "r").acquire()
    assert not writer_alive(tmp_path / "r") and list(tmp_path.iterdir()) == []  # no run folder nor .lock left
    run = tmp_path / "old"  # a run trained elsewhere, resumed there: --runs-dir cannot move it, a copy can
    run.mkdir()
    (run / "config.toml").write_text("")
    with pytest.raises(LiverctlError, match=rf"old: cannot lock it .*; copy the run to a local disk and go on there "
                                            rf"\(cp -r {run} runs/ && liverctl train --resume runs/old\)$"):
        RunLock(run).acquire()
    assert [p.name for p in run.iterdir()] == ["config.toml"]


def test_a_run_in_a_runs_folder_linked_to_nowhere_is_one_line(tmp_path):
    """`train --runs-dir runs` where runs -> /mnt/big/runs and /mnt/big is not mounted (a Docker volume missing)
    ended in a traceback, FileExistsError: [Errno 17] File exists: 'runs'. Now it is one line naming the link;
    nothing is made at its target (on the disk that holds the empty mount point)."""
    (tmp_path / "runs").symlink_to(tmp_path / "big" / "runs")
    with pytest.raises(LiverctlError, match=r"runs: is a link to .*big/runs', which does not exist \(a disk or volume "
                                            r"not mounted\?\); mount it, or choose another --runs-dir"):
        RunLock(tmp_path / "runs" / "r").acquire()
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]


def test_a_runs_folder_linked_to_nowhere_is_said_so(tmp_path):
    """`runs --runs-dir runs` (and `watch`, a run's name) where runs -> a disk not mounted said 'there is no folder
    runs/; train one with `liverctl train --preset demo`': the runs are there, on the disk to mount."""
    from liverctl.runs.folder import no_runs_text

    (tmp_path / "runs").symlink_to(tmp_path / "big" / "runs")
    assert no_runs_text(tmp_path / "runs") == (
        f"{tmp_path / 'runs'} is a link to {str(tmp_path / 'big' / 'runs')!r}, which does not exist (a disk or volume "
        "not mounted?); mount it, or give --runs-dir the folder that holds your runs")
    assert no_runs_text(tmp_path / "none") == (f"there is no folder {tmp_path / 'none'}/; train one with `liverctl "
                                                "train --preset demo`, or give --runs-dir the folder that holds yours")


def test_a_run_named_through_a_link_to_nowhere_is_said_so_beside_other_runs(tmp_path):
    """`runs --runs-dir runs2` or `submit --run runs2`, where runs2 -> a disk not mounted and runs/ holds runs, said
    "no run 'runs2' ...; the runs in runs/, newest first: 'a'", as if the name were mistyped; a run linked into
    runs/ from that disk the same. The link is said first, wherever the name leads through it."""
    from liverctl.runs.folder import no_such_run

    root = tmp_path / "runs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "events.jsonl").write_text("")
    (tmp_path / "runs2").symlink_to("/mnt/not-mounted/runs")
    (root / "b").symlink_to("/mnt/not-mounted/b")
    for name, link in ((tmp_path / "runs2", tmp_path / "runs2"), (tmp_path / "runs2" / "x", tmp_path / "runs2"),
                       ("b", root / "b")):
        assert str(no_such_run(root, name, "--run")) == (
            f"--run: {link} is a link to '{os.readlink(link)}', which does not exist (a disk or volume not "
            "mounted?); mount it, or name another run")
    assert "the runs in" in str(no_such_run(root, "nope"))
