"""The project's own error type: what a user can hit, said in one or two lines.

Library code raises `LiverctlError`; only the command layer turns it into a message and an exit code.
"""

from __future__ import annotations

import re


class LiverctlError(Exception):
    """A problem the user can fix: bad input, a missing store, an unknown preset.

    The message names the file (where there is one) and the problem, and, where it helps, what to do next.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: object | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class NaNAbort(LiverctlError):
    """Training stopped by the NaN guard after repeated rollbacks."""

    exit_code = 3


_WORKER_WRAPPED = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\n")


def own_line(exc: BaseException) -> str:
    """The error's own message. One raised in a DataLoader worker reaches the main process rebuilt by torch
    as `Caught LiverctlError in DataLoader worker process 0.` + the worker's traceback: its last line, the
    message the worker raised, without the exception's name."""
    text = str(exc)
    if not _WORKER_WRAPPED.match(text):
        return text
    last = text.rstrip().splitlines()[-1]
    return re.sub(r"^[\w.]+: ", "", last, count=1)
