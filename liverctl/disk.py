"""Sizes and full disks in words: "1.5 GB", "no space left on DEVICE while writing WHAT".

Writers that can fill a disk (ingest, postprocess, ...) catch `OSError`, test it with `is_disk_full`, remove
what they half-wrote and raise `no_space_error`. `os_error_behind` finds the `OSError` behind a writer's own
error (torch.save's RuntimeError on a full disk). Work whose size is known beforehand (an ingest, a
training's checkpoints) is refused at its start by `require_free` instead.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from liverctl.errors import LiverctlError

# What a place that cannot be written answers: a read-only mount such as Kaggle's /kaggle/input, or a folder of
# another user's.
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KB"; whole bytes below 1 KB; an absurd size (a header's claim) in powers of ten of PB."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}" if abs(n) < 10_000 else f"{n:.2g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc` says the file system (or the user's quota on it) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def os_error_behind(exc: BaseException) -> OSError | None:
    """The `OSError` that `exc` is or was raised while handling, if any.

    Some writers report a failed write as an error of their own, with the `OSError` only as its cause
    or context: `torch.save` on a full disk raises `RuntimeError("[enforce fail at inline_container.cc]
    . unexpected pos ...")` while handling `OSError(ENOSPC)`. A context its raiser suppressed
    (`raise ... from None`) is not followed.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


def nearest_existing(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists (missing ones are made when written)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: str | os.PathLike) -> str:
    """The mount point of the file system that holds (or would hold) `path`: through a link, the one it leads to
    (`free_bytes` counts that one's space)."""
    here = Path(os.path.realpath(nearest_existing(Path(os.path.abspath(path)))))
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return str(here)


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes (for this user) on the file system that holds (or would hold) `path`."""
    return shutil.disk_usage(nearest_existing(Path(os.path.abspath(path)))).free


def require_free(where: str | os.PathLike, need: float, needs: str, advice: str) -> int:
    """Refuse up front, in one line, work that would fill the disk halfway: `LiverctlError` when the file
    system of `where` has less than `need` bytes free ("WHERE: NEEDS need about 1.2 GB but MOUNT has
    300.0 MB free; ADVICE"). Returns the free bytes."""
    free = free_bytes(where)
    if need > free:
        raise LiverctlError(
            f"{needs} need about {human_bytes(need)} but {mount_point(where)} has {human_bytes(free)} free; "
            f"{advice}",
            path=where,
        )
    return free


def no_space_message(where: str | os.PathLike, what: str) -> str:
    return f"no space left on {mount_point(where)} while writing {what}"


def no_space_error(where: str | os.PathLike, what: str) -> LiverctlError:
    """The full-disk line for a file: "WHERE: no space left on DEVICE while writing WHAT"."""
    return LiverctlError(no_space_message(where, what), path=where)
