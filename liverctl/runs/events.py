"""The event log: `runs/<name>/events.jsonl`, the only link between `train` and `watch` / `runs`.

One JSON object per line, appended and flushed by the trainer, never rewritten. Every line carries
`v`, `ts`, `seq`, `run`, `kind`, `epoch`, `step`. Kinds written by the trainer:

| kind        | payload fields                                                                      |
|-------------|-------------------------------------------------------------------------------------|
| run_start   | config (resolved), preset, device, amp (bf16/fp16/off), versions, resumed_from       |
| step        | loss, lr, samples_per_s, grad_norm (rate-limited)                                    |
| epoch_end   | train_loss, val_loss, volume_dice, slice_dice, global_dice, seconds, is_best,        |
|             | epochs (total planned), samples_per_s (the epoch's training steps, validation out;  |
|             | absent for an epoch resumed after its last step)                                     |
| checkpoint  | path, which (last/best/interrupt), volume_dice                                       |
| nan         | where (loss/grad/val_loss/...), action (skip_step/rollback/abort), counts {skipped,  |
|             | rollbacks}, message                                                                  |
| note        | message                                                                              |
| run_end     | status (completed/failed/interrupted/time_limit/nan_abort), best {epoch,             |
|             | volume_dice}, message                                                                |

`epoch` on every line is the number of epochs completed when the event was written: steps of the
first epoch carry 0, its `epoch_end` and `checkpoint` carry 1. `step` is the global optimiser step.

Non-finite numbers are written as `null`, and the writer adds a `nan` event naming the fields
(action `report`) unless the caller already wrote one. Readers tolerate unknown kinds, a half-written
last line, a file that does not exist yet and a line over MAX_LINE_BYTES (skipped unread: `LineReader`).

This module is standard-library only: the TUI imports it and must never load torch or numpy.
"""

from __future__ import annotations

import datetime
import errno
import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.disk import no_space_error
from liverctl.errors import LiverctlError
from liverctl.files import unshare_hard_link
from liverctl.plural import plural
from liverctl.runs.folder import EVENTS_FILE

SCHEMA_VERSION = 1
# Limits on what a reader accepts from a line (logs are shared, so they are untrusted input): nesting
# deeper than the trainer ever writes and integers beyond int64 make the line unreadable, not an
# exception in `runs`, `watch` or `report`.
MAX_DEPTH = 32
MAX_INT = 2**63
MAX_TS = 1e11  # seconds since 1970: year 5138; beyond it clocks and durations overflow
KINDS = ("run_start", "step", "epoch_end", "checkpoint", "nan", "note", "run_end")
# Why a chart of step events may have none: what report's curves and watch's charts say in their place.
NO_STEP_EVENTS = "no step events: the run logs one every train.log_every steps"


def json_value(value: Any, nonfinite: list[str] | None = None, where: str = "") -> Any:
    """`value` as strict JSON holds it, so that `json.dumps(..., allow_nan=False)` never fails on it: the one
    rule for every JSON file liverctl writes (events, checkpoint sidecars, experiment.json) and `runs --json`.

    - NaN, infinity: null; where it was (`loss`, `folds[2]`, under `where`) appended to `nonfinite` when given
    - str, int, bool, None, a finite float (numpy's float64 too): as they are, a float subclass as a float
    - dict: an object, each key as str(key); list, tuple: an array
    - set, frozenset: an array, sorted (by repr where the items do not compare)
    - datetime.date, .datetime, .time (TOML's dates and times): ISO 8601 text
    - numpy scalars and arrays, torch tensors (whatever has tolist()): their Python value, a 0-d one a number
    - bytes, bytearray: text, decoded as UTF-8, a byte that is not UTF-8 as its escape (\\xff)
    - anything else (a Path): str(value)
    """
    if isinstance(value, (str, int)) or value is None:  # bool is an int
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        if nonfinite is not None:
            nonfinite.append(where)
        return None
    if isinstance(value, dict):
        return {str(k): json_value(v, nonfinite, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        try:
            value = sorted(value)
        except TypeError:
            value = sorted(value, key=repr)
    if isinstance(value, (list, tuple)):
        return [json_value(v, nonfinite, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (datetime.date, datetime.time)):  # datetime.datetime is a date
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="backslashreplace")
    if callable(getattr(value, "tolist", None)):  # numpy / torch, without importing either
        return json_value(value.tolist(), nonfinite, where)
    return str(value)


class EventWriter:
    """Appends events to a run's log; one line per event, flushed (and fsynced) at once.

    A resumed run keeps appending to the same file; `seq` continues from the last line on disk.
    Only rank 0 of a distributed run should own a writer.
    """

    def __init__(self, run_dir: str | os.PathLike, run: str, *, fsync: bool = True):
        self.path = Path(run_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run = run
        self.fsync = fsync
        self.seq = _last_seq(self.path) + 1
        unshare_hard_link(self.path, what="the event log")  # a copy's log appended to its original's (cp -al)
        # A raw descriptor, no buffer: a write that fails (disk full) leaves nothing pending to retry at exit.
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, kind: str, *, epoch: int | None = None, step: int | None = None, **payload: Any) -> dict:
        bad: list[str] = []
        clean = json_value(payload, bad)
        record = {
            "v": SCHEMA_VERSION,
            "ts": time.time(),
            "seq": self.seq,
            "run": self.run,
            "kind": kind,
            "epoch": epoch,
            "step": step,
            **clean,
        }
        self._write(record)
        if bad and kind != "nan":
            self.emit(
                "nan",
                epoch=epoch,
                step=step,
                where=f"{kind}:{','.join(bad)}",
                action="report",
                message=f"non-finite value in {kind} event: {', '.join(bad)}",
            )
        return record

    def _write(self, record: dict) -> None:
        data = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
        if self._fd is None:
            raise ValueError(f"{self.path}: event writer is closed")
        try:
            while data:
                data = data[os.write(self._fd, data):]
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise no_space_error(self.path, "the event log") from None
            raise LiverctlError(f"cannot write the event log: {exc.strerror or exc}", path=self.path) from None
        self.seq += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _last_seq(path: Path) -> int:
    """The `seq` of the log's last event that has one, -1 for none. The lines are read from the end
    (`lines_from_end`) until one holds such an event: a torn or unreadable last line (a kill, someone's edit) is
    passed over as every reader passes it over. Reading the whole log into events took 3.8 s and 455 MB of a
    300k-step log at every `--resume`."""
    try:
        with open(path, "rb") as fh:
            for line in lines_from_end(fh):
                event = parse_line(line)
                if event is not None and isinstance(event.get("seq"), int):
                    return event["seq"]
    except OSError:  # as read_events: a missing or unreadable log has no event
        pass
    return -1


def parse_line(line: str) -> dict | None:
    """One event from one line, or None for a blank, half-written, non-object or unreasonable line.

    Unreasonable: nested deeper than `MAX_DEPTH`, an integer beyond int64, or an envelope field of the
    wrong type (`ts` not a time stamp in [0, MAX_TS); `seq`, `epoch`, `step` not null or an integer >= 0;
    `kind` not a string). Never raises for any text, so one bad line costs only itself.
    """
    obj = loads_object(line)
    return obj if obj is not None and _envelope_ok(obj) else None


def loads_object(text: str) -> dict | None:
    """A JSON object from untrusted text (an event line, a sidecar, a scores file), or None.

    None for anything but an object, and for nesting deeper than `MAX_DEPTH` or an integer beyond
    int64; never raises.
    """
    text = text.strip()
    if not text or text[0] != "{":
        return None
    try:
        obj = _DECODER.decode(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; so is a bounded-out number
        return None
    return obj if isinstance(obj, dict) and _shallow(obj) else None


def _envelope_ok(event: dict) -> bool:
    ts = event.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float)) or not 0 <= ts < MAX_TS):
        return False
    for key in ("seq", "epoch", "step"):
        value = event.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            return False
    return event.get("kind") is None or isinstance(event.get("kind"), str)


def _bounded_int(text: str) -> int:
    if len(text) > 20 or abs(value := int(text)) >= MAX_INT:
        raise ValueError("integer beyond int64")
    return value


def _constant(name: str) -> float:
    """NaN / Infinity / -Infinity as written by Python's json; the trainer writes null instead."""
    return float(name.replace("Infinity", "inf"))


# One decoder for every line (json.loads with these hooks would build a new one per call: a tenth of the time
# of reading a 100k-step log); like json's own default decoder it is shared between threads.
_DECODER = json.JSONDecoder(parse_int=_bounded_int, parse_constant=_constant)


def _shallow(obj: Any) -> bool:
    """Whether `obj` nests at most `MAX_DEPTH` containers deep (checked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def parse_lines(lines: Iterable[str]) -> tuple[list[dict], int]:
    """The events of complete lines, and how many lines held none though not blank (unreadable: garbage, a line
    over `MAX_LINE_BYTES`), which `runs` and `watch` both count (`unreadable_note`)."""
    events, unreadable = [], 0
    for line in lines:
        event = parse_line(line)
        if event is not None:
            events.append(event)
        else:
            unreadable += line.strip() != ""
    return events, unreadable


def unreadable_note(count: int) -> str:
    """What `runs` (a problem of the run) and `watch` (beneath the epochs) say of a log's unreadable lines."""
    return f"{EVENTS_FILE}: {plural(count, 'unreadable line')} skipped"


def read_events(path: str | os.PathLike) -> list[dict]:
    """All complete events of a log (a torn last line is ignored).

    A missing or unreadable log (a folder in its place, no permission) is an empty list: `read_history`
    says which in its problems. Lines are split on "\n" only, as `EventTail` splits them (a stray "\r" in
    garbage is not a line end); a line over `MAX_LINE_BYTES` is skipped unread (`LineReader`).
    """
    try:
        return list(iter_events(path))
    except OSError:
        return []


def iter_events(path: str | os.PathLike) -> Iterator[dict]:
    """`read_events` one event at a time, for a reader that folds a long log without holding it (report's
    curves); OSError as it comes."""
    reader = LineReader()
    with open(path, "rb") as fh:
        for event in map(parse_line, read_lines(fh, reader)):
            if event is not None:
                yield event
    last = parse_line(reader.pending)  # a last line that lacks only its newline
    if last is not None:
        yield last


# No event the trainer writes comes near this (a run_start with its whole config is a few kB); a longer line
# in someone's log is skipped unread, as unreadable, so that it costs neither memory nor time.
MAX_LINE_BYTES = 1 << 20
READ_BYTES = 1 << 20  # a log is read this much at a time (at most MAX_LINE_BYTES: see `LineReader.feed`)
# What `LineReader` gives for a line over MAX_LINE_BYTES: no JSON object (`parse_line` gives None) and not
# blank, so every reader skips it and counts it as an unreadable line, as any other.
OVERLONG_LINE = "\x00(a line over MAX_LINE_BYTES, skipped unread)"


class LineReader:
    """A log's bytes in, its complete lines out as text, never holding more than `MAX_LINE_BYTES` of a line.

    `feed(data)` returns the lines that `data` completes; a line over `limit` bytes comes out as
    `OVERLONG_LINE`, its bytes dropped as they come. `pending` is the text of the line not yet ended
    ("" when none; `OVERLONG_LINE` when it is already over the limit).
    """

    def __init__(self, limit: int = MAX_LINE_BYTES):
        self.limit = limit
        self._held = b""  # the bytes of the line not yet ended
        self._over = False  # that line is over the limit: its bytes are dropped until its end

    @property
    def pending(self) -> str:
        return OVERLONG_LINE if self._over else self._held.decode("utf-8", errors="replace")

    def feed(self, data: bytes) -> list[str]:
        """The lines `data` completes. Lines inside `data` are decoded in one go (the speed of a long log)
        and so must be short: `data` is at most `limit` bytes, so only the line it continues can be long."""
        if len(data) > self.limit:  # a caller's big read: in pieces that keep the rule above
            return [line for at in range(0, len(data), self.limit) for line in self.feed(data[at:at + self.limit])]
        first = data.find(b"\n")
        if first < 0:
            self._hold(data)
            return []
        self._hold(data[:first])
        lines = [self.pending]
        self._held, self._over = b"", False
        last = data.rfind(b"\n")
        if last > first:
            lines += data[first + 1:last].decode("utf-8", errors="replace").split("\n")
        self._hold(data[last + 1:])
        return lines

    def _hold(self, data: bytes) -> None:
        if self._over or not data:
            return
        if len(self._held) + len(data) > self.limit:
            self._held, self._over = b"", True
        else:
            self._held += data


def read_lines(fh: Any, reader: LineReader | None = None) -> Iterator[str]:
    """The complete lines of a binary file from where it stands to its end, read `READ_BYTES` at a time
    through `reader` (a new one: from a line's start); what follows the last newline stays in
    `reader.pending`."""
    reader = reader or LineReader()
    while data := fh.read(READ_BYTES):
        yield from reader.feed(data)


def lines_from_end(fh: Any, limit: int = MAX_LINE_BYTES) -> Iterator[str]:
    """The lines of a binary file, last first, read `READ_BYTES` at a time from its end: first the text after
    its last newline ("" when it ends with one; a line still being written), then each complete line. A line
    over `limit` bytes comes out as `OVERLONG_LINE`, never held whole."""
    pos = fh.seek(0, os.SEEK_END)
    start = b""  # the bytes of the line that began before the part read so far (its end known)
    over = False  # that line is already over the limit: its earlier bytes are dropped
    while pos > 0:
        size = min(READ_BYTES, pos)
        pos -= size
        fh.seek(pos)
        parts = (fh.read(size) + (b"" if over else start)).split(b"\n")
        ends = parts[1:]
        if over and ends:
            ends[-1] = None  # the overlong line's first bytes
            over = False
        for part in reversed(ends):
            yield OVERLONG_LINE if part is None or len(part) > limit else part.decode("utf-8", errors="replace")
        start = b"" if over else parts[0]
        if len(start) > limit:
            start, over = b"", True
    yield OVERLONG_LINE if over else start.decode("utf-8", errors="replace")


# `EventTail` keeps this many bytes of the log's start and of the bytes just before where it stopped: a log
# truncated and written again (even larger, on the same inode) differs there from what was read.
FINGERPRINT_BYTES = 64
# A log whose mtime is less than this before the end of the poll that read it may be written again with the
# same mtime (a file system's timestamps move in ticks: a few ms on a kernel before 6.13, 1 s on ext3 or NFS,
# 2 s on FAT): the polls go on comparing its fingerprints until it is older, then a stat alone tells again.
RACY_NS = 2_000_000_000


@dataclass
class EventTail:
    """Incremental reader for a log that is still being written (used by `watch`).

    `poll()` returns the events completed since the last call. A last line without its newline is held
    back until it is finished. A file that disappears, is replaced, shrinks, or no longer holds the bytes
    already read (truncated and written again, even larger) is re-read from the start on the next poll, and
    `restarted` says that poll started over; `missing` says whether the file is currently absent. The file
    is read in pieces through a `LineReader`: a line over `MAX_LINE_BYTES` is never held, even unfinished.
    A poll of a file whose (inode, size, mtime) is as the last poll left it is one `stat`, unless that mtime
    was within `RACY_NS` of the read: a rewrite of the same size in the same timestamp tick leaves the stat
    as it was, so such a file's fingerprints are compared (two small reads) until it is older.
    """

    path: Path
    _offset: int = 0
    _reader: LineReader = field(default_factory=LineReader, repr=False)  # holds the line not yet ended
    missing: bool = True
    restarted: bool = False  # the last poll read the file from its start again, after reading some of it
    _stat: tuple[int, int, int] | None = field(default=None, repr=False)  # (inode, size, mtime) at the last poll
    # The last poll's stat may not tell a later rewrite (`RACY_NS`: mtime within a tick of when it was read)
    _racy: bool = field(default=False, repr=False)
    _head: bytes = field(default=b"", repr=False)  # the file's first bytes, as read
    _before: bytes = field(default=b"", repr=False)  # the bytes just before `_offset`, as read

    def poll(self) -> list[dict]:
        return [e for e in (parse_line(line) for line in self.poll_lines()) if e is not None]

    def poll_lines(self) -> list[str]:
        """The lines completed since the last call, unparsed (`parse_line` each; `watch` parses a long log
        in parts, off its UI thread)."""
        self.restarted = False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.missing = True
            return []
        self.missing = False
        if (st.st_ino, st.st_size, st.st_mtime_ns) == self._stat and not self._racy:
            return []  # untouched since the last poll: not even opened
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if self._changed(fh, st):
                    self._offset, self._reader, self._head, self._before = 0, LineReader(), b"", b""
                    self.restarted = True
                fh.seek(self._offset)
                lines = []
                while chunk := fh.read(READ_BYTES):
                    lines += self._reader.feed(chunk)
                    self._offset += len(chunk)
                    if len(self._head) < FINGERPRINT_BYTES:
                        self._head = (self._head + chunk[:FINGERPRINT_BYTES])[:FINGERPRINT_BYTES]
                    self._before = (self._before + chunk[-FINGERPRINT_BYTES:])[-FINGERPRINT_BYTES:]
        except FileNotFoundError:
            self.missing = True
            return []
        self._stat = (st.st_ino, st.st_size, st.st_mtime_ns)
        self._racy = time.time_ns() - st.st_mtime_ns < RACY_NS
        return lines

    def _changed(self, fh: Any, st: os.stat_result) -> bool:
        """Whether the open file `fh` is no longer the one read so far: another file, shorter than what was
        read, or other bytes at its start or just before where the last poll stopped (two small reads)."""
        if not self._offset:
            return False
        if self._stat is None or st.st_ino != self._stat[0] or st.st_size < self._offset:
            return True
        fh.seek(0)
        if fh.read(len(self._head)) != self._head:
            return True
        fh.seek(self._offset - len(self._before))
        return fh.read(len(self._before)) != self._before

    def starts_over(self) -> bool:
        """Whether the next poll will read the file from its start after reading some of it (see `poll`);
        False while the file is absent. OSError as `poll` raises it."""
        if not self._offset:
            return False
        try:
            with open(self.path, "rb") as fh:
                return self._changed(fh, os.fstat(fh.fileno()))
        except FileNotFoundError:
            return False
