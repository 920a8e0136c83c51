"""A disk that fills: `fill_disk(monkeypatch, room=0, only=None)` makes the files liverctl's atomic writes open
(`liverctl.files.open`) take `room` more bytes, then fail with ENOSPC as write(2) does on a full disk; `only`
limits that to the paths it accepts (the others are written as usual)."""

from __future__ import annotations

import errno
from collections.abc import Callable


class DiskFillsAfter:
    """A file on a disk with `room` bytes left: writes succeed until then, then fail with ENOSPC."""

    def __init__(self, real, room: int = 0):
        self._real, self._room = real, room

    def write(self, data):
        data = memoryview(data).cast("B") if not isinstance(data, str) else data
        if len(data) > self._room:
            if self._room:
                self._real.write(data[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._real.write(data)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()


def fill_disk(monkeypatch, room: int = 0, only: Callable[[str], bool] | None = None) -> None:
    from liverctl import files

    real_open = open

    def opener(path, *args, **kwargs):
        fh = real_open(path, *args, **kwargs)
        return DiskFillsAfter(fh, room) if only is None or only(str(path)) else fh

    monkeypatch.setattr(files, "open", opener, raising=False)
