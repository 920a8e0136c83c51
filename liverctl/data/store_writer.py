"""The store on disk while ingest writes it (main process): creating or opening it, the lock and work
folder beside it (`ingest_running`: whether an ingest holds it, for readers), the complete cases it holds,
moving a finished case in whole, and the free-space check."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from liverctl.data.schema import (
    CASES_GROUP,
    INDEX_GROUP,
    STORE_FORMAT,
    create_group,
    read_attrs,
    read_metadata,
)
from liverctl.data.sources import CaseFiles
from liverctl.disk import require_free
from liverctl.errors import LiverctlError
from liverctl.plural import plural
from liverctl.printable import quoted

# Store bytes per source voxel, from real CT (totalseg-dicom20: the image stored at 0.55 x float16, the
# label at 0.016 x uint8), rounded up so that the estimate errs towards the larger store.
_IMAGE_BYTES_PER_VOXEL = 1.3
_LABEL_BYTES_PER_VOXEL = 0.05


def open_or_create_store(path: Path) -> None:
    """Make `path` a liverctl store with a `cases` group, or check that it is one."""
    if path.exists() and not path.is_dir():
        raise LiverctlError("exists and is not a folder; choose another --store", path=path)
    if path.is_dir() and any(path.iterdir()):
        fmt = read_attrs(path).get("format")
        if isinstance(fmt, str) and fmt.startswith("liverctl-store/") and fmt != STORE_FORMAT:
            raise LiverctlError(
                f"is a store of format {quoted(fmt)}, which this liverctl ({STORE_FORMAT!r}) cannot update; ingest into "
                "a new --store, or use the liverctl that wrote it",
                path=path,
            )
        if fmt != STORE_FORMAT:
            raise LiverctlError("exists and is not a liverctl store; choose another --store", path=path)
    else:
        create_group(path, {"format": STORE_FORMAT})
    if read_metadata(path / CASES_GROUP) is None:
        create_group(path / CASES_GROUP, {})


def _ingest_dir(store: Path) -> Path:
    """`.<store name>.ingest` beside the store: an ingest's lock file and work folder, removed when it ends. Beside
    the store's real folder: one linked in from another disk (`store/liver.zarr -> /mnt/big/liver.zarr`) had its
    cases built beside the link and met `Invalid cross-device link` when they were renamed in."""
    real = Path(os.path.realpath(store))
    return real.parent / f".{real.name}.ingest"


def ingest_running(store: str | os.PathLike) -> bool:
    """Whether an ingest is writing the store at `store` now (holds its lock). Creates nothing."""
    from liverctl.files import lock_held

    store = Path(store)
    return lock_held(_ingest_dir(store) / "lock")


def refuse_read_only_folder(store: Path) -> None:
    """An ingest writes beside the store (its lock and work folder) and in it: a store whose folder cannot be
    written (one attached read-only, as /kaggle/input is) is refused in one line saying what reads it as it is."""
    from liverctl.files import not_writable_error

    beside = _ingest_dir(store).parent
    if not beside.is_dir():  # made by the ingest: a failure there is the folder's own line
        return
    if (exc := not_writable_error(beside)) is not None:
        as_it_is = (", or use this store as it is: train --store, submit --store and `liverctl verify --store` "
                    "only read it") if store.is_dir() else ""
        raise LiverctlError(f"its folder cannot be written ({exc.strerror or exc}); ingest into a --store in a folder "
                            f"you can write to (e.g. --store store/liver.zarr){as_it_is}", path=store)


@contextlib.contextmanager
def exclusive_work_dir(store: Path) -> Iterator[Path]:
    """Lock the store against a second ingest and give a clean work folder on the same file system."""
    from liverctl.files import check_no_dangling_link

    check_no_dangling_link(store, option="--store")
    refuse_read_only_folder(store)
    if store.is_dir() and os.path.ismount(os.path.realpath(store)):  # ismount says False of any link
        raise _across_file_systems(store)
    if (inner := _inner_file_system(store)) is not None:
        raise _inner_across_file_systems(store, inner)
    base = _ingest_dir(store)
    lock_file = _lock(base, store)
    try:
        work = base / "work"
        if work.exists():  # left by a killed run
            shutil.rmtree(work)
        work.mkdir()
        try:
            yield work
        finally:  # what the work folder holds is built again by the next run: nothing left beside the store
            shutil.rmtree(base, ignore_errors=True)
    finally:
        lock_file.close()


def _lock(base: Path, store: Path, tries: int = 5):
    """`base/lock`, opened and locked (flock, exclusive). An ingest that ends removes `base`, lock file and all,
    before it lets go of its lock: a file opened just before that and locked just after is no longer the one at
    `base/lock`, where the next ingest makes and locks a new one, so that lock is let go of and taken again."""
    import fcntl

    from liverctl.files import flock_retrying

    for _ in range(tries):
        base.mkdir(parents=True, exist_ok=True)
        try:
            lock_file = open(base / "lock", "w")  # noqa: SIM115 - held for the whole run
        except FileNotFoundError:  # `base` removed by an ingest that just ended
            continue
        try:
            # a reader's `ingest_running` probes it for a moment
            flock_retrying(lock_file.fileno(), fcntl.LOCK_EX, path=store,
                           advice="give --store a folder on a disk that takes them (a local one)")
        except LiverctlError:
            lock_file.close()  # no ingest can hold a lock there: the lock file made is removed, and its folder if empty
            (base / "lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                base.rmdir()
            raise
        except BlockingIOError:
            lock_file.close()
            raise LiverctlError("another `liverctl ingest` is writing this store; wait for it", path=store) from None
        try:
            if os.stat(base / "lock").st_ino == os.fstat(lock_file.fileno()).st_ino:
                return lock_file
        except FileNotFoundError:
            pass
        lock_file.close()
    raise LiverctlError(f"could not lock {base / 'lock'}: it was removed {tries} times while being locked; is "
                        "another `liverctl ingest` starting and ending on this store again and again?", path=store)


def case_folders(store: Path) -> dict[str, dict[str, Any]]:
    """Attributes of every case folder of the store, complete or not ({} for one whose zarr.json is unreadable),
    by id in id order; reads each group's zarr.json once and changes nothing."""
    cases_dir = store / CASES_GROUP
    entries = sorted(cases_dir.iterdir()) if cases_dir.is_dir() else []
    return {entry.name: read_attrs(entry) for entry in entries if entry.is_dir()}


def complete_cases(store: Path, folders: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Attributes of every complete case; removes case folders that are not complete. `folders`: the store's
    `case_folders`, where already read (under the same lock: nothing has changed them since)."""
    cases: dict[str, dict[str, Any]] = {}
    for name, attrs in (case_folders(store) if folders is None else folders).items():
        if attrs.get("complete") is True:
            cases[name] = attrs
        else:  # never written by ingest (which renames whole cases in), but never trust a partial case
            shutil.rmtree(store / CASES_GROUP / name)
    return cases


def _across_file_systems(store: Path) -> LiverctlError:
    return LiverctlError("is a file system of its own (a mount point): ingest builds each case beside the store and "
                         "renames it in, which cannot cross file systems; give --store a folder inside it, e.g. "
                         f"--store {store / 'liver.zarr'}", path=store)


def _inner_file_system(store: Path) -> Path | None:
    """The store's cases/ or index/ folder where it lies on another file system than the store's own folder (a
    link to another disk, a mount: Docker's `-v /big/cases:/store/liver.zarr/cases`), else None."""
    here = os.stat(Path(os.path.realpath(store)).parent).st_dev if store.is_dir() else None
    for name in (CASES_GROUP, INDEX_GROUP):
        inner = store / name
        if inner.is_dir() and (os.path.ismount(inner) or (inner.is_symlink() and os.stat(inner).st_dev != here)):
            return inner
    return None


def _inner_across_file_systems(store: Path, inner: Path) -> LiverctlError:
    return LiverctlError(f"its folder {inner.name}/ is on another file system (a link or a mount to another disk): "
                         "ingest builds each case and the index beside the store and renames them in, which cannot "
                         "cross file systems; keep the whole store on one disk (a link to the store's own folder "
                         "works)", path=store)


def commit_case(built: Path, store: Path, case_id: str, work: Path) -> None:
    """Move a finished case into the store, replacing an older version of it. A rename the kernel refuses across
    file systems (a bind mount that `os.path.ismount` misses, of the store or of its cases/: which one, it cannot
    tell) is one line saying what crossed them."""
    try:
        _commit_case(built, store, case_id, work)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        inner = store / CASES_GROUP
        if inner.is_symlink() or os.path.ismount(inner):
            raise _inner_across_file_systems(store, inner) from exc
        beside = Path(os.path.realpath(store)).parent  # where the work folder was (`_ingest_dir`), gone once it ends
        raise LiverctlError(f"moving a built case from ingest's work folder in {beside} into its {CASES_GROUP}/ "
                            "crossed file systems (a bind mount of the store or of its cases/?): ingest builds each "
                            "case beside the store and renames it in, which cannot cross them; keep the whole store, "
                            "and the folder it is in, on one file system, with no mount of it or inside it",
                            path=store) from exc


def _commit_case(built: Path, store: Path, case_id: str, work: Path) -> None:
    target = store / CASES_GROUP / case_id
    if target.exists():
        old = work / f"replaced-{case_id}"
        os.rename(target, old)
        os.rename(built, target)
        shutil.rmtree(old)
    else:
        os.rename(built, target)


def check_free_space(store: Path, cases: list[CaseFiles]) -> int:
    """Estimate the bytes `cases` add to the store (from the NIfTI headers) and raise `LiverctlError` when
    the store's disk has less free space than that. Returns the estimate.

    A header that cannot be read counts nothing here: that case fails later with its own message.
    """
    from liverctl.data.nifti import open_nifti

    need = 0.0
    for case in cases:
        try:  # the checked header: an absurd one is refused by the case's own ingest, not counted here
            voxels = math.prod(open_nifti(case.volume).shape[:3])
        except Exception:  # reported by the case's own ingest
            continue
        need += voxels * (_IMAGE_BYTES_PER_VOXEL + (_LABEL_BYTES_PER_VOXEL if case.label else 0.0))
    require_free(store, need, f"the {plural(len(cases), 'case')} to ingest",
                 "free some space or give --store a folder on a larger disk")
    return int(need)
