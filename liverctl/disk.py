"""Sizes and full disks in words: "1.5 GB", "no space left on DEVICE while writing WHAT".

Writers that can fill a disk (ingest, postprocess, ...) catch `OSError`, test it with `is_disk_full`, remove
what they half-wrote and raise `no_space_error`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from liverctl.errors import LiverctlError


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KB"; whole bytes below 1 KB."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the file system (or the user's quota on it) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def mount_point(path: str | os.PathLike) -> str:
    """The mount point of the file system that holds (or would hold) `path`."""
    here = Path(os.path.abspath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return str(here)


def no_space_message(where: str | os.PathLike, what: str) -> str:
    return f"no space left on {mount_point(where)} while writing {what}"


def no_space_error(where: str | os.PathLike, what: str) -> LiverctlError:
    """The one-line error for a full disk at `where` while writing `what`."""
    return LiverctlError(f"{no_space_message(where, what)}; free some space and try again")
