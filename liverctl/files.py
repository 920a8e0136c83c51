"""Small file helpers with one behaviour each: the atomic write, a file's sha256, natural sort, and the
probe of a lock another process holds.

`write_atomic` is the one way liverctl writes a small file that must never be seen half-written: a
temporary file in the same folder, fsync of the file, `os.replace`, fsync of the folder (`atomic_open`
for a writer that takes a file object, `atomic_path` for one that takes a file name). On any failure
the temporary file is removed; a full disk becomes one line ("no space left on DEVICE while writing
WHAT"). Standard library only: the TUI may import it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from liverctl.disk import is_disk_full, nearest_existing, no_space_error, os_error_behind
from liverctl.errors import LiverctlError
from liverctl.printable import quoted

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> list[tuple[int, int, str]]:
    """Sort key that orders embedded numbers by value: case2 < case10, v3 < v3.1 < v4 < v5 < v5-focal."""
    # re.split with a group puts the digit runs at the odd positions.
    return [(0, int(part), "") if i % 2 else (1, 0, part) for i, part in enumerate(_DIGITS.split(text))]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_output_file(path: str | os.PathLike, *, what: str, option: str, folder_hint: str) -> None:
    """Refuse, up front, an output file that cannot be written (a folder, a place that cannot be written)
    before the minutes of work that produce it: a probe file is created and removed in its folder (the
    nearest one that exists; missing folders are made at the end). `what` names the output in the message
    ("the submission"), `option` the option that names it ("--out"), `folder_hint` what it takes ("--out takes
    the CSV's file name, ...")."""
    path = Path(path)
    if path.is_dir():
        raise LiverctlError(f"is a folder; {folder_hint}", path=path)
    check_no_dangling_link(path, option=option)
    folder = nearest_existing(path.parent)
    if not folder.is_dir():
        raise LiverctlError(f"cannot write {what} there: {folder} is not a folder", path=path)
    if (exc := write_probe_error(folder)) is not None:
        # a read-only input (/kaggle/input) beside a writable place: say where else to go
        raise LiverctlError(f"cannot write {what} in {folder}: {exc.strerror or exc}; give {option} a file in a "
                            "folder you can write to", path=path) from None


def check_output_folder(path: str | os.PathLike, *, what: str, option: str) -> None:
    """`check_output_file` for an output folder written through `staged_folder`: refused up front where it is a
    file, or where the folder (if it exists: its files are staged in it) or the nearest one above it that exists
    (where it and its staging folder will be made) cannot be written (`submit --save-masks` into /kaggle/input
    failed only once the models were loaded)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LiverctlError(f"exists and is not a folder; {option} takes a folder for {what}", path=path)
    check_no_dangling_link(path, option=option)
    folder = nearest_existing(path)  # where staged_folder gathers them: in the folder if it exists, else beside it
    if folder.is_dir() and (exc := write_probe_error(folder)) is not None:
        raise LiverctlError(f"cannot write {what} in {folder}: {exc.strerror or exc}; give {option} a folder "
                            "you can write to", path=path) from None


def check_no_dangling_link(path: str | os.PathLike, *, option: str | None = None) -> None:
    """Refuse, in one line, a path to write that leads through a link to nowhere (`out -> /mnt/big/out` with
    /mnt/big not mounted, a Docker volume missing): making a folder there ended in a traceback (`FileExistsError`:
    the link is in the way), or made the link's target on the disk that holds the empty mount point. `option`
    names the option that takes the path, for what to do next."""
    if (link := dangling_link(path)) is not None:
        raise LiverctlError(f"{dangling_link_text(link)}; mount it, or choose another {option or 'folder'}", path=link)


def dangling_link(path: str | os.PathLike) -> Path | None:
    """The link to nowhere that `path` leads through (itself, or a folder above it), or None."""
    here = Path(os.path.abspath(path))
    for part in (here, *here.parents):
        if part.exists():  # it and every folder above lead somewhere
            return None
        if part.is_symlink():
            return part
    return None


def dangling_link_text(link: Path) -> str:
    """What a link to nowhere is, for a message about it (`dangling_link`)."""
    try:
        target = quoted(os.readlink(link))
    except OSError:  # removed meanwhile
        target = "a place"
    return f"is a link to {target}, which does not exist (a disk or volume not mounted?)"


def not_writable_error(folder: str | os.PathLike) -> OSError | None:
    """`write_probe_error` where it says `folder` cannot be written (`liverctl.disk.NOT_WRITABLE`: a read-only
    mount such as /kaggle/input, permission denied), else None: another error is the command's own to meet."""
    from liverctl.disk import NOT_WRITABLE

    exc = write_probe_error(folder)
    return exc if exc is not None and exc.errno in NOT_WRITABLE else None


def write_probe_error(folder: str | os.PathLike) -> OSError | None:
    """The `OSError` a new file in `folder` meets (a read-only file system, permission denied), or None: a
    probe file is created and removed, which answers for root on a read-only mount where permissions do not."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".liverctl-probe-"):
            return None
    except OSError as exc:
        return exc


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems (and Windows) cannot open a folder: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# The temporary names liverctl gives beside a target NAME: an atomic write's file, `.NAME.<pid>.tmp` (`atomic_open`)
# or `.<pid>.tmp.NAME` (`atomic_path`: NAME's suffix stays last), and a work folder, `.NAME.<pid>.XXXX.tmp`
# (`work_dir_beside`: mkdtemp's random part holds no dot). Each read by one pattern (`_temp_pid`), so that what a
# killed writer left is found, and only that. A pid has at most 10 digits.
_TEMP_NAME = ".{name}.{pid}.tmp"
_TEMP_PATH_NAME = ".{pid}.tmp.{name}"
_TEMP_FILE_NAMES = (re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})\.tmp", re.DOTALL),
                    re.compile(r"\.(?P<pid>[0-9]{1,10})\.tmp\.(?P<name>.+)", re.DOTALL))
_WORK_DIR_NAMES = (re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})\.[^.]+\.tmp", re.DOTALL),)


def _temp_pid(temp_name: str, name: str | None = None, patterns: tuple[re.Pattern, ...] = _TEMP_FILE_NAMES
              ) -> int | None:
    """The writer's pid where `temp_name` is a temporary name (`patterns`: an atomic write's file, or
    `_WORK_DIR_NAMES`) of the file or folder `name` (None: of any name); None where it is none."""
    for pattern in patterns:
        match = pattern.fullmatch(temp_name)
        if match is not None and (name is None or match["name"] == name):
            return int(match["pid"])
    return None


def temp_files(path: str | os.PathLike) -> list[Path]:
    """The temporary files of atomic writes of `path` that were never renamed onto it (a writer killed mid-way:
    SIGKILL, the OOM killer), any process's. Remove them only where no other process may be writing `path`
    (under its writer's lock), or only those of writers that are gone: `remove_dead_temp_files`."""
    path = Path(path)
    try:
        with os.scandir(path.parent) as entries:  # one listing of the folder: every atomic write of it lists it
            return sorted(path.parent / e.name for e in entries if _temp_pid(e.name, path.name) is not None)
    except (FileNotFoundError, NotADirectoryError):
        return []


def is_temp_file(path: str | os.PathLike) -> bool:
    """Whether `path`'s name is one an atomic write gives its temporary file (`.NAME.<pid>.tmp`,
    `.<pid>.tmp.NAME`): a killed writer's leftover where no writer runs."""
    return _temp_pid(Path(path).name) is not None


def process_gone(pid: int) -> bool:
    """Whether no process `pid` runs on this host (a pid in a leftover's name: its writer was killed)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # alive as another user's; a number no pid can be
        return False
    return False


def remove_dead_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove what atomic writes of `path` by processes now gone left (`temp_files`), never a live writer's: the
    pid in its name runs no process here, and no process holds a lock on it (its writer's, on a shared file
    system). Every atomic write of `path` calls it first, so the next write of a killed writer's file tidies."""
    path = Path(path)
    removed = []
    for temp in temp_files(path):
        if process_gone(_temp_pid(temp.name, path.name) or 0) and not lock_held(temp):
            _remove(temp)
            removed.append(temp)
    return removed


def _lock_temp(fd: int) -> None:
    """Hold a lock on a temporary file while it is written: `remove_dead_temp_files` leaves it alone."""
    import fcntl

    with contextlib.suppress(OSError):  # a file system without locks: the pid alone tells
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


@contextlib.contextmanager
def _replace_when_done(path: Path, tmp: Path, what: str | None) -> Iterator[None]:
    """Around a body that writes `tmp` (and fsyncs it): rename `tmp` onto `path` and fsync the folder.

    On any exception `tmp` is removed and `path` is left as it was; an `OSError`, or an error a writer
    raised over one (`os_error_behind`), becomes a one-line `LiverctlError` (the full-disk line when the
    disk is full).
    """
    try:
        yield
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        # Best effort: on a read-only file system unlinking the temporary file that was never made fails
        # too (EROFS, not ENOENT), and that failure must not stand in for the one that matters.
        with contextlib.suppress(OSError):
            _remove(tmp)
        # An OSError, or a writer's own error raised over one (torch.save on a full disk), is one line;
        # anything else (a refusal already in words, Ctrl-C) goes on as it is.
        cause = os_error_behind(exc) if isinstance(exc, Exception) and not isinstance(exc, LiverctlError) else None
        if cause is None:
            raise
        if is_disk_full(cause):
            raise no_space_error(path, what or path.name) from None
        # the OSError kept as the cause: a caller may tell a folder it cannot write (NOT_WRITABLE) from others
        raise LiverctlError(f"cannot write {what or path.name}: {cause.strerror or cause}", path=path) from cause


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, what: str | None = None,
                encoding: str | None = "utf-8", newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit it is fsynced and renamed onto `path`.

    `what` names the file in a full-disk message (default: the file name). On any exception the
    temporary file is removed and `path` is left as it was; an `OSError` becomes a `LiverctlError`.
    """
    path = Path(path)
    remove_dead_temp_files(path)
    tmp = path.with_name(_TEMP_NAME.format(name=path.name, pid=os.getpid()))
    binary = "b" in mode
    with _replace_when_done(path, tmp, what), open(
        tmp, mode, encoding=None if binary else encoding, newline=None if binary else newline
    ) as fh:
        _lock_temp(fh.fileno())
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, what: str | None = None) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that takes a file name rather than a file object
    (nibabel, which picks the format from the name's ending); on a clean exit the file written there is
    fsynced and renamed onto `path`, and the folder fsynced, as `atomic_open` does.

    The temporary name ends with `path`'s own name (`.<pid>.tmp.case.nii.gz`), so any suffix rule holds.
    """
    path = Path(path)
    remove_dead_temp_files(path)
    tmp = path.with_name(_TEMP_PATH_NAME.format(name=path.name, pid=os.getpid()))
    with _replace_when_done(path, tmp, what), open(tmp, "ab") as held:  # the writer rewrites the file held
        _lock_temp(held.fileno())
        yield tmp
        _fsync_file(tmp)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: str | bytes, *, what: str | None = None,
                 check: Callable[[Path], None] | None = None) -> Path:
    """Write `data` (text as UTF-8, or bytes) to `path` atomically; see `atomic_open`.

    `check(tmp)`, when given, runs on the finished temporary file before the rename (a self-check may
    refuse it by raising).
    """
    path = Path(path)
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", what=what) as fh:
        fh.write(data)
        if check is not None:
            fh.flush()
            check(Path(fh.name))
    return path


# What flock answers on a file system that takes no locks (NFS mounted with nolock, some FUSE and SMB mounts).
NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def unshare_hard_link(path: str | os.PathLike, *, what: str | None = None) -> bool:
    """Before a file is changed in place (appended: a run's event log, submissions.jsonl), make it this name's own
    where it has other names (a hard-linked copy of its folder: `cp -al`, `rsync --link-dest`, a snapshot): its
    bytes copied into a new file renamed onto it (`atomic_open`), so the other names keep what they held. Resuming
    a copy made with `cp -al` appended its epochs to the original run's log, which then named a best epoch its
    best.pt does not hold. Returns whether it copied; no file, or one of one name, is left as it is."""
    import shutil

    path = Path(path)
    try:
        if os.stat(path).st_nlink <= 1:
            return False
    except FileNotFoundError:
        return False
    with open(path, "rb") as src, atomic_open(path, "wb", what=what) as fh:
        shutil.copyfileobj(src, fh)
    return True


def flock_retrying(fd: int, mode: int, tries: int = 5, *, path: str | os.PathLike, advice: str) -> None:
    """flock without blocking, tried a few times 20 ms apart: `lock_held` takes a shared lock for a moment,
    and a writer starting just then must not be refused for it. `BlockingIOError` when still held. A file
    system that takes no locks (`NO_LOCKS`) is one line naming `path` (what the lock guards), with `advice`
    (where else to write): a writer there could not keep a second one out, nor tell a reader it runs."""
    import fcntl

    for attempt in range(tries):
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(0.02)
        except OSError as exc:
            if exc.errno not in NO_LOCKS:
                raise
            raise LiverctlError(f"cannot lock it ({exc.strerror or exc}): its file system takes no locks (NFS "
                                f"mounted with nolock?), and one writer at a time needs one; {advice}",
                                path=path) from exc


def lock_held(path: str | os.PathLike) -> bool:
    """Whether a live process holds an exclusive `flock` on the file at `path` now (a run's writer, an ingest).

    Probed with a shared lock taken and dropped at once (writers take theirs through `flock_retrying`); no
    file, or one nobody holds, is False. Creates nothing: it may probe beside a read-only store.
    """
    import fcntl

    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:  # on a file system without locks (NO_LOCKS) no writer holds one: none can run there
            return exc.errno not in NO_LOCKS
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def work_dir_beside(target: str | os.PathLike, *, within: str | os.PathLike | None = None) -> Path:
    """A new hidden folder beside `target` (`.<name>.<pid>.XXXX.tmp`, on the same file system, so its contents
    rename into place), readable as the folder it stands for (mkdtemp makes it private). Those a process now
    gone left there (killed before its step ended) are deleted first. `within`: the folder to make it in
    instead of `target`'s own (`staged_folder` stages an existing folder's files inside it)."""
    import tempfile

    target = Path(target)
    folder = Path(within) if within is not None else target.parent
    check_no_dangling_link(target)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_dead_work_dirs(target, within=folder)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=folder))
    except OSError as exc:  # named as the folder asked for (a read-only mount, a file in the way), not the hidden one
        raise type(exc)(exc.errno, exc.strerror, str(target)) from exc
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)
    return work


def remove_dead_work_dirs(target: str | os.PathLike, *, within: str | os.PathLike | None = None) -> list[Path]:
    """Delete the hidden folders `work_dir_beside(target, within=)` made for processes that are gone (never a
    live one's)."""
    import glob
    import shutil

    target = Path(target)
    folder = Path(within) if within is not None else target.parent
    removed = []
    for work in folder.glob(f".{glob.escape(target.name)}.*.*.tmp"):
        pid = _temp_pid(work.name, target.name, _WORK_DIR_NAMES)
        if pid is not None and work.is_dir() and process_gone(pid):
            shutil.rmtree(work, ignore_errors=True)
            removed.append(work)
    return removed


def is_work_dir(path: str | os.PathLike, target: str | os.PathLike) -> bool:
    """Whether `path` is named as a hidden folder `work_dir_beside(target)` makes (any process's)."""
    return _temp_pid(Path(path).name, Path(target).name, _WORK_DIR_NAMES) is not None


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Files written into the yielded hidden folder (`work_dir_beside`), in sub-folders too, move into the folder
    `target` (made if missing; a file of the same name replaced) once the block ends without an error; after an
    error or Ctrl-C the hidden folder is deleted and `target` is as it was (after a kill, the next work folder
    there deletes it). What a finished step wrote appears together, not a part of it that looks like the whole.
    `replace`: what `target` held before goes (report's folder), a file the new one also has replaced in one
    rename, so it is never missing (report's marker); an error or Ctrl-C while the new entries move in puts the old
    ones back (`_put_back`). The folder deleted while the step runs (and its staging folder with it) is one line
    (`LiverctlError`), not a success.

    A folder that does not exist yet is staged beside it and renamed into place whole; one that exists is staged
    inside it, on its own file system: a mount point (Docker's `-v $PWD/out:/out`, a link to another disk) met
    `Invalid cross-device link` from a staging folder beside it, and a writable /kaggle/working under a /kaggle
    that is not could not be staged beside at all."""
    import shutil

    target = Path(target)
    inside = target.is_dir()
    work = work_dir_beside(target, within=target if inside else None)
    aside = None
    try:
        try:
            yield work
        except LiverctlError as exc:  # said of a file in the hidden folder, gone once it ends: named where it goes
            if str(work) not in str(exc):
                raise
            raise _named_in(exc, work, target) from exc
        if not work.is_dir():  # deleted with the folder it was in: the step's files with it
            raise LiverctlError("was deleted while liverctl wrote into it, and what it wrote with it: nothing was "
                                "saved; run the step again", path=target if inside else target.parent)
        if not inside and not target.exists():
            with contextlib.suppress(OSError):  # made by someone else meanwhile: file by file below
                os.rename(work, target)
        if work.exists():
            target.mkdir(parents=True, exist_ok=True)
            if replace:
                aside = _move_aside(target, work)
            new_names = [entry.name for entry in work.iterdir()]
            try:
                for path in sorted(work.rglob("*")):  # a folder before what it holds
                    moved = target / path.relative_to(work)
                    if path.is_dir() and not path.is_symlink():
                        moved.mkdir(exist_ok=True)
                    else:
                        os.replace(path, moved)
            except BaseException:
                if aside is not None and not _put_back(target, aside, new_names):
                    aside = None  # what could not be put back is left there, not deleted
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def _named_in(exc: LiverctlError, work: Path, target: Path) -> LiverctlError:
    """`exc` (its type and attributes kept: its exit code, a subclass's own fields) with the paths in the hidden
    folder `work` named in `target`. Made without calling its `__init__`, which a subclass may have changed
    (copy.copy called it with the message alone: a TypeError)."""
    named = type(exc).__new__(type(exc))
    named.__dict__.update(exc.__dict__)
    named.args = (str(exc).replace(str(work), str(target)),)
    if exc.path is not None:
        named.path = exc.path.replace(str(work), str(target))
    return named


def _move_aside(target: Path, work: Path) -> Path:
    """What `target` holds, moved into a new hidden folder inside it (returned, to delete): all but hidden work
    folders (this step's, another's). A file `work` holds a file of the same name for stays (the new one replaces
    it in one rename: never missing), with a second name in the hidden folder (a copy where the file system takes
    no hard links) for `_put_back`."""
    import shutil

    aside = work_dir_beside(target, within=target)
    for entry in list(target.iterdir()):
        new = work / entry.name
        if is_work_dir(entry, target):
            continue
        if new.exists() and not new.is_dir() and not entry.is_dir():
            try:
                os.link(entry, aside / entry.name, follow_symlinks=False)
            except OSError:
                with contextlib.suppress(OSError):  # no room for a copy: it is replaced as before, not kept
                    shutil.copy2(entry, aside / entry.name, follow_symlinks=False)
            continue
        os.replace(entry, aside / entry.name)
    return aside


def _put_back(target: Path, aside: Path, new_names: list[str]) -> bool:
    """After an error while the new entries moved into `target`: the new ones (`new_names`, its top level) removed
    and what `_move_aside` put in `aside` moved back, so `target` is as it was (an old file the new one had replaced
    is renamed back over it: never missing). Whether all of it went back."""
    import shutil

    kept = {entry.name for entry in aside.iterdir()}
    for name in new_names:
        new = target / name
        if name in kept and not (aside / name).is_dir() and not (new.is_dir() and not new.is_symlink()):
            continue  # the old file is renamed over it below
        if new.is_dir() and not new.is_symlink():
            shutil.rmtree(new, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                new.unlink()
    whole = True
    for name in kept:
        try:
            os.replace(aside / name, target / name)
        except OSError:
            whole = False
    return whole
