"""`liverctl.files`: the one atomic write, sha256, natural sort."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from full_disk import fill_disk

from liverctl import files
from liverctl.errors import LiverctlError


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _record_fsyncs(monkeypatch) -> list[bool]:
    """Each fsync from now on, as True for a folder and False for a file."""
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", recording_fsync)
    return synced


def test_write_atomic_writes_replaces_and_fsyncs_file_and_folder(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    target.write_text("old")
    synced = _record_fsyncs(monkeypatch)
    files.write_atomic(target, "new text ü")
    assert target.read_text(encoding="utf-8") == "new text ü"
    assert synced == [False, True]  # the file, then its folder (so the rename itself is durable)
    files.write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == []


def test_a_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "config.toml"
    target.write_text("kept")
    fill_disk(monkeypatch)
    with pytest.raises(LiverctlError) as info:
        files.write_atomic(target, "x = 1\n", what="the run's config")
    message = str(info.value)
    assert message.startswith(f"{target}: no space left on ") and message.endswith(" while writing the run's config")
    from liverctl.disk import mount_point

    assert mount_point(tmp_path) in message  # DEVICE is the mount point holding the file
    assert "\n" not in message
    assert target.read_text() == "kept" and _leftovers(tmp_path) == []


def test_a_full_disk_at_fsync_and_other_os_errors_are_one_line_too(tmp_path, monkeypatch):
    target = tmp_path / "scores.json"

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(LiverctlError, match="no space left on .* while writing scores.json"):
        files.write_atomic(target, "{}")
    assert not target.exists() and _leftovers(tmp_path) == []
    monkeypatch.undo()

    with pytest.raises(LiverctlError, match="cannot write the scores: "):
        files.write_atomic(tmp_path / "missing-folder" / "s.json", "{}", what="the scores")


def test_a_read_only_file_system_names_the_target_and_keeps_its_os_error(tmp_path, monkeypatch):
    """On a read-only mount (/kaggle/input) unlinking the temporary file that was never made fails too, with
    EROFS rather than ENOENT: that second error escaped instead of the first, naming the hidden temporary
    file ('.submission.scores.json.31846.tmp: read-only file system'). Now the line names the target, and its
    OSError stays the cause, so a caller can tell a folder it cannot write (evaluate's scores beside a CSV)."""
    from liverctl.disk import os_error_behind

    target = tmp_path / "submission.scores.json"

    def read_only(*args, **kwargs):  # what a read-only mount answers to a write, and to an unlink (root too)
        raise OSError(errno.EROFS, "Read-only file system", os.fspath(args[0]))

    monkeypatch.setattr(files, "open", read_only, raising=False)
    monkeypatch.setattr(files.os, "unlink", read_only)
    with pytest.raises(LiverctlError) as raised:
        files.write_atomic(target, "{}", what="the scores")
    assert str(raised.value) == f"{target}: cannot write the scores: Read-only file system"
    assert os_error_behind(raised.value).errno == errno.EROFS


def test_an_output_folder_whose_own_folder_is_writable_but_not_the_one_above_is_written(tmp_path, monkeypatch):
    """staged_folder staged an output folder's files beside it: `submit --save-masks /kaggle/working` (writable)
    under a /kaggle that is not was refused, first as 'cannot write the NIfTI masks in /kaggle', then with 'give
    --save-masks a folder inside it'. An existing folder's files are now staged in the folder itself, so the check
    passes and the masks are written; a folder that cannot be written is refused as before."""
    import tempfile

    above, writable = tmp_path / "kaggle", tmp_path / "kaggle" / "working"
    writable.mkdir(parents=True)
    real_file, real_dir = tempfile.TemporaryFile, tempfile.mkdtemp

    def read_only_above(real):
        def made(*args, dir=None, **kwargs):  # what a read-only mount answers, to root too
            if os.fspath(dir) == os.fspath(above):
                raise OSError(errno.EROFS, "Read-only file system")
            return real(*args, dir=dir, **kwargs)
        return made

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only_above(real_file))
    monkeypatch.setattr(tempfile, "mkdtemp", read_only_above(real_dir))
    files.check_output_folder(writable, what="the NIfTI masks", option="--save-masks")
    with files.staged_folder(writable) as work:
        (work / "1.nii.gz").write_bytes(b"mask")
    assert [p.name for p in writable.iterdir()] == ["1.nii.gz"]
    with pytest.raises(LiverctlError, match=f"^{above}: cannot write the NIfTI masks in {above}: Read-only file "
                                            "system; give --save-masks a folder you can write to$"):
        files.check_output_folder(above, what="the NIfTI masks", option="--save-masks")
    with pytest.raises(LiverctlError, match=f"^{above / 'new'}: cannot write the NIfTI masks in {above}: "):
        files.check_output_folder(above / "new", what="the NIfTI masks", option="--save-masks")


def test_a_staged_folder_that_is_a_mount_point_gets_its_files_without_crossing_devices(tmp_path, monkeypatch):
    """`submit --save-masks /out` where /out is a mount point (Docker's `-v $PWD/out:/out`, a link to another disk)
    staged the masks in /, then os.replace met `Invalid cross-device link` (a traceback, after the CSV was written).
    An existing folder is now staged inside itself; a new one is still made beside and renamed into place whole."""
    mount = tmp_path / "out"
    mount.mkdir()
    real_replace, real_rename = os.replace, os.rename

    def one_device(real):
        def moved(src, dst):  # as the kernel answers a rename between two file systems
            if Path(src).is_relative_to(mount) != Path(dst).is_relative_to(mount):
                raise OSError(errno.EXDEV, "Invalid cross-device link", os.fspath(src))
            return real(src, dst)
        return moved

    monkeypatch.setattr(os, "replace", one_device(real_replace))
    monkeypatch.setattr(os, "rename", one_device(real_rename))
    (mount / "old.nii.gz").write_bytes(b"kept")
    with files.staged_folder(mount) as work:
        assert work.parent == mount and work.name.startswith(".out.")
        (work / "sub").mkdir()
        (work / "sub" / "a.nii.gz").write_bytes(b"a")
        (work / "b.nii.gz").write_bytes(b"b")
    assert sorted(str(p.relative_to(mount)) for p in mount.rglob("*")) == ["b.nii.gz", "old.nii.gz", "sub",
                                                                           "sub/a.nii.gz"]
    with files.staged_folder(tmp_path / "new") as work:  # not there yet: beside it, renamed whole
        assert work.parent == tmp_path
        (work / "c.nii.gz").write_bytes(b"c")
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["c.nii.gz"]


def test_a_failed_check_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    target = tmp_path / "sub.csv"
    target.write_text("old")

    def refuse(tmp):
        assert tmp.read_text() == "new"  # the check sees the finished temporary file
        raise LiverctlError("self-check failed")

    with pytest.raises(LiverctlError, match="self-check failed"):
        files.write_atomic(target, "new", check=refuse)
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_file_sha256_matches_hashlib_across_blocks(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert files.file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_natural_key_orders_numbers_by_value():
    names = ["v10", "v3.1", "v3", "demo", "v5-focal", "v5", "v2", "case²", "case10", "case9"]
    assert sorted(names, key=files.natural_key) == [
        "case9", "case10", "case²", "demo", "v2", "v3", "v3.1", "v5", "v5-focal", "v10"]


def test_atomic_path_hands_a_name_ending_like_the_target_and_fsyncs_file_and_folder(tmp_path, monkeypatch):
    target = tmp_path / "case.nii.gz"
    target.write_bytes(b"old")
    synced = _record_fsyncs(monkeypatch)
    with files.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".case.nii.gz") and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing replaced before the body ends
    assert target.read_bytes() == b"new"
    assert synced == [False, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz"]


def test_atomic_path_keeps_the_old_file_on_failure_and_a_full_disk_is_one_line(tmp_path):
    target = tmp_path / "mask.nii"
    target.write_bytes(b"kept")
    with pytest.raises(RuntimeError, match="writer failed"), files.atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"kept" and sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii"]

    with pytest.raises(LiverctlError) as info, files.atomic_path(target, what="the mask") as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    message = str(info.value)
    assert message.startswith(f"{target}: no space left on ") and message.endswith(" while writing the mask")
    assert target.read_bytes() == b"kept" and sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii"]


def test_a_writers_own_error_over_a_full_disk_is_the_full_disk_line(tmp_path):
    """torch.save raises RuntimeError("... unexpected pos ...") while handling the OSError of a full disk;
    atomic writes find the OSError behind it. An error in words already, or one whose raiser dropped the
    OSError on purpose, goes on unchanged."""
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous")

    def written(body):
        with files.atomic_open(target, "wb", what="the checkpoint") as fh:
            fh.write(b"half")
            body()

    def torch_like():
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904 (as torch does)

    with pytest.raises(LiverctlError) as info:
        written(torch_like)
    assert str(info.value).startswith(f"{target}: no space left on ")
    assert str(info.value).endswith(" while writing the checkpoint") and "inline_container" not in str(info.value)

    def refused_in_words():
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise LiverctlError("the config is not a table")  # noqa: B904

    with pytest.raises(LiverctlError, match="^the config is not a table$"):
        written(refused_in_words)

    def dropped():
        try:
            raise OSError(errno.EIO, "I/O error")
        except OSError:
            raise ValueError("not a number") from None

    with pytest.raises(ValueError, match="not a number"):
        written(dropped)
    assert target.read_bytes() == b"previous" and _leftovers(tmp_path) == []


def test_a_staged_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out" / "masks"
    with pytest.raises(KeyboardInterrupt), files.staged_folder(target) as work:
        (work / "a.nii.gz").write_bytes(b"a")
        raise KeyboardInterrupt
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []
    with files.staged_folder(target) as work:
        (work / "a.nii.gz").write_bytes(b"a")
        assert not target.exists()
    assert [p.name for p in target.iterdir()] == ["a.nii.gz"] and list((tmp_path / "out").iterdir()) == [target]
    with files.staged_folder(target) as work:  # into a folder that exists: same names replaced, others kept
        (work / "b.nii.gz").write_bytes(b"b")
        (work / "a.nii.gz").write_bytes(b"new")
    assert sorted(p.name for p in target.iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert (target / "a.nii.gz").read_bytes() == b"new" and list((tmp_path / "out").iterdir()) == [target]


def _gone_pid() -> int:
    """The pid of a process that has ended (a writer killed mid-way, as far as its leftovers tell)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_an_atomic_write_removes_what_a_killed_writer_left_never_a_live_ones(tmp_path):
    """A writer killed between creating its temporary file and the rename (SIGKILL, the OOM killer) left
    `.NAME.<pid>.tmp` beside the file for good: submit's CSV, evaluate's JSON, an experiment's experiment.json,
    postprocess's masks (`.<pid>.tmp.NAME`). Now the next atomic write of that file removes those of processes
    that are gone, and keeps a live process's (by its pid, or by the lock it holds on the file: a writer on
    another host of a shared file system)."""
    import fcntl
    import subprocess
    import sys

    target = tmp_path / "sub.csv"
    dead = _gone_pid()
    left = [tmp_path / f".sub.csv.{dead}.tmp", tmp_path / f".{dead}.tmp.sub.csv"]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        kept = [tmp_path / f".sub.csv.{live.pid}.tmp", tmp_path / ".other.csv.1.tmp"]
        locked = tmp_path / f".{_gone_pid()}.tmp.sub.csv"  # its pid gone here, its writer alive elsewhere
        for path in [*left, *kept, locked]:
            path.write_text("half")
        with open(locked, "rb") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)
            files.write_atomic(target, "whole")
            assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [target, *kept, locked])
        with files.atomic_path(target) as tmp:  # the other writer tidies the same
            tmp.write_text("whole again")
            assert files.lock_held(tmp)  # its own temporary file is held while it is written
        assert not locked.exists() and target.read_text() == "whole again"
    finally:
        live.kill()
        live.wait()


def test_a_work_folder_a_killed_process_left_is_deleted_by_the_next(tmp_path):
    """`work_dir_beside` (report's build, submit's --save-masks staging) made `.NAME.XXXX.tmp`: a killed report
    left it, and its moved-aside old report (`.NAME.old-<pid>`), beside the report for good. Now the folder's
    name carries its pid and the next one deletes those of processes that are gone, not a live one's."""
    target = tmp_path / "report"
    dead = tmp_path / f".report.{_gone_pid()}.abcd.tmp"
    (dead / "overlays").mkdir(parents=True)
    (dead / "overlays" / "a.png").write_bytes(b"png")
    live = files.work_dir_beside(target)
    assert live.name.startswith(f".report.{os.getpid()}.") and live.name.endswith(".tmp")
    assert not dead.exists()
    again = files.work_dir_beside(target)
    assert live.is_dir() and again.is_dir() and again != live
    target.mkdir()  # staged_folder stages an existing folder inside it: a killed step's folder there too
    inner = target / f".report.{_gone_pid()}.abcd.tmp"
    inner.mkdir()
    with files.staged_folder(target) as work:
        assert work.parent == target and not inner.exists()


def test_names_that_are_almost_temporary_names_are_none_and_one_pattern_reads_them_all(tmp_path):
    """One reading of `.NAME.<pid>.tmp` / `.<pid>.tmp.NAME` for `is_temp_file` and `temp_files` (a regex and a
    hand-made slicing disagreed: a name holding a newline was a temporary file to one and not the other)."""
    temp = [".x.12.tmp", ".12.tmp.x", ".x.5.tmp.77.tmp", ".a.b.0.tmp", ".x\n.3.tmp"]
    almost = ["x.12.tmp", ".x.tmp", ".x..tmp", ".x.12a.tmp", ".x.١٢.tmp", ".x.12.tmp.bak~", ".12.tmp.", ".x.12.TMP",
              ".x." + "9" * 240 + ".tmp", ".x.12345678901.tmp", "..12.tmp"]
    assert [n for n in temp if not files.is_temp_file(tmp_path / n)] == []
    assert [n for n in almost if files.is_temp_file(tmp_path / n)] == []
    for name in [*temp, *almost]:
        (tmp_path / name).write_text("")
    assert [p.name for p in files.temp_files(tmp_path / "x")] == sorted([".12.tmp.x", ".x.12.tmp"])
    assert [p.name for p in files.temp_files(tmp_path / "x.5.tmp")] == [".x.5.tmp.77.tmp"]
    assert [p.name for p in files.temp_files(tmp_path / "x\n")] == [".x\n.3.tmp"]


def test_a_work_folder_is_read_as_its_own_targets_never_a_longer_names(tmp_path):
    """`.out.<pid>.XXXX.tmp` belongs to `out`; the live work folder of `out.999999999` (`.out.999999999.<pid>.
    XXXX.tmp`) was read as `out`'s with pid 999999999, a process that cannot be, and deleted under its writer."""
    other = files.work_dir_beside(tmp_path / "out.999999999")
    (other / "a.png").write_bytes(b"png")
    dead = tmp_path / f".out.{_gone_pid()}.abcd1234.tmp"
    dead.mkdir()
    assert files.remove_dead_work_dirs(tmp_path / "out") == [dead]
    assert (other / "a.png").is_file()


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_file_system_without_locks_is_one_line_and_holds_no_writer(tmp_path, monkeypatch, code):
    """NFS mounted without locks answers flock with ENOLCK (some FUSE mounts EOPNOTSUPP): a writer was told the
    lock was held by another process, five tries later, and a reader (`lock_held`) took every file there for one
    a live writer holds. Now the writer gets one line saying the file system takes no locks, at once, and a
    reader sees no writer (none can run there); a lock that is held is still told apart."""
    import fcntl

    calls = []

    def flock(fd, op):
        calls.append(op)
        raise OSError(code, os.strerror(code))

    lock = tmp_path / "lock"
    lock.write_text("")
    monkeypatch.setattr(fcntl, "flock", flock)
    with open(lock, "rb") as fh, pytest.raises(LiverctlError) as caught:
        files.flock_retrying(fh.fileno(), fcntl.LOCK_EX, path=tmp_path, advice="use a local disk")
    assert str(caught.value) == (f"{tmp_path}: cannot lock it ({os.strerror(code)}): its file system takes no locks "
                                 "(NFS mounted with nolock?), and one writer at a time needs one; use a local disk")
    assert len(calls) == 1
    assert not files.lock_held(lock)

    def held(fd, op):
        raise BlockingIOError(errno.EWOULDBLOCK, "held")

    monkeypatch.setattr(fcntl, "flock", held)
    assert files.lock_held(lock)
    with open(lock, "rb") as fh, pytest.raises(BlockingIOError):
        files.flock_retrying(fh.fileno(), fcntl.LOCK_EX, path=tmp_path, advice="use a local disk")


@pytest.mark.parametrize("exists", [False, True])
def test_an_error_in_a_staged_folder_names_the_file_where_it_was_going(tmp_path, monkeypatch, exists):
    """`synth /out/syn` on a disk that filled up said 'error: /out/.syn.15259.s6up0spn.tmp/test/volume-4.nii.gz: no
    space left on /out while writing synthetic case volume-4.nii.gz', a hidden folder deleted by the time it was
    read. The line now names the file where it was going; the error keeps its type, and the folder is as it was."""
    target = tmp_path / "syn"
    if exists:
        target.mkdir()
    fill_disk(monkeypatch)
    with pytest.raises(LiverctlError) as caught, files.staged_folder(target) as work:
        (work / "test").mkdir()
        files.write_atomic(work / "test" / "volume-4.nii.gz", b"x" * 100, what="synthetic case volume-4.nii.gz")
    message = str(caught.value)
    assert message.startswith(f"{target / 'test' / 'volume-4.nii.gz'}: no space left on ") and ".tmp" not in message
    assert message.endswith(" while writing synthetic case volume-4.nii.gz")
    assert caught.value.path == str(target / "test" / "volume-4.nii.gz") and type(caught.value) is LiverctlError
    assert sorted(p.name for p in tmp_path.iterdir()) == (["syn"] if exists else [])
    assert not exists or list(target.iterdir()) == []


def test_an_error_of_its_own_kind_in_a_staged_folder_is_named_where_it_was_going(tmp_path):
    """A LiverctlError subclass with an `__init__` of its own (postprocess's FilesNotCleaned, submission's
    MalformedSubmission) saying a file in the hidden folder was copied by calling that `__init__` with the message
    alone: a TypeError traceback in place of the line. It keeps its type and fields now."""

    class Counted(LiverctlError):
        exit_code = 5

        def __init__(self, path, count: int):
            self.count = count
            super().__init__(f"{count} problems", path=path)

    target = tmp_path / "out"
    with pytest.raises(Counted) as caught, files.staged_folder(target) as work:
        raise Counted(work / "a.nii.gz", 3)
    assert str(caught.value) == f"{target / 'a.nii.gz'}: 3 problems" and caught.value.count == 3
    assert caught.value.path == str(target / "a.nii.gz") and caught.value.exit_code == 5


def test_an_output_through_a_link_to_nowhere_is_one_line_and_nothing_is_made(tmp_path):
    """`--out /out/...`, `--save-masks out` or synth's OUT where out -> /mnt/big/out and /mnt/big is not mounted
    (a Docker volume missing) ended in a traceback, FileExistsError: [Errno 17] File exists: 'out', after the
    minutes of work for submit's masks and report. The checks up front, and the staged folder, now refuse it."""
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "big" / "out")
    expected = r"out: is a link to .*big/out', which does not exist \(a disk or volume not mounted\?\); mount it, or "
    with pytest.raises(LiverctlError, match=expected + "choose another --out"):
        files.check_output_file(out / "sub" / "submission.csv", what="the submission", option="--out", folder_hint="")
    with pytest.raises(LiverctlError, match=expected + "choose another --save-masks"):
        files.check_output_folder(out, what="the masks", option="--save-masks")
    for target in (out, out / "syn"):
        with pytest.raises(LiverctlError, match=expected + "choose another folder"), files.staged_folder(target):
            pass
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    live = tmp_path / "live"
    live.symlink_to(tmp_path)  # a link that leads somewhere is no business of this check
    files.check_output_folder(live / "masks", what="the masks", option="--save-masks")


@pytest.mark.parametrize("failure", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()])
def test_a_replaced_folder_is_put_back_as_it_was_when_the_move_fails_midway(tmp_path, monkeypatch, failure):
    """`staged_folder(replace=True)` (report's folder) moved the old entries aside, then the new ones in one by
    one: an error or Ctrl-C between two of those renames deleted the old report and left part of the new one.
    The old entries are put back now (the new ones moved in so far removed), a file both have included."""
    target = tmp_path / "r"
    (target / "overlays").mkdir(parents=True)
    (target / "overlays" / "old.png").write_bytes(b"old png")
    (target / "index.html").write_text("old index")
    (target / "marker").write_text("old marker")
    (target / "stale.png").write_bytes(b"stale")
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    real = os.replace
    moved_in = []

    def fail_on_the_third(src, dst):  # of the renames into the folder, once: putting back goes through
        if Path(dst).parent in (target, target / "overlays"):
            moved_in.append(dst)
            if len(moved_in) == 3:
                raise failure
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_the_third)
    with pytest.raises(type(failure)), files.staged_folder(target, replace=True) as work:
        (work / "overlays").mkdir()
        (work / "overlays" / "new.png").write_bytes(b"new png")
        (work / "index.html").write_text("new index")
        (work / "marker").write_text("new marker")
        (work / "curves.png").write_bytes(b"curves")
    assert len(moved_in) > 3  # curves.png and index.html had moved in, marker's failed; then put back
    assert {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in target.iterdir()) == ["index.html", "marker", "overlays", "stale.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


@pytest.mark.parametrize("exists", [True, False])
def test_a_staged_folder_deleted_while_the_step_runs_is_one_line_not_a_success(tmp_path, exists):
    """An existing folder is staged inside itself: deleted by the user while the step ran (`rm -r out` in another
    terminal), its staging folder went with it, and the step said it had written its files there. It says in one
    line now that the folder was deleted and nothing was saved (a new one's, staged beside it: the folder above)."""
    import shutil

    parent = tmp_path / "out"
    target = parent / "masks"
    target.mkdir(parents=True)
    if not exists:
        shutil.rmtree(target)
    deleted = target if exists else parent
    with pytest.raises(LiverctlError) as caught, files.staged_folder(target) as work:
        (work / "a.nii.gz").write_bytes(b"a")
        shutil.rmtree(deleted)
    assert str(caught.value) == (f"{deleted}: was deleted while liverctl wrote into it, and what it wrote with it: "
                                 "nothing was saved; run the step again")
    assert not deleted.exists()  # not made again, part-empty
