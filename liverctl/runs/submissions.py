"""A run's submissions.jsonl written so that a submit killed at any moment loses no submission.

A submit writes its line into a journal in each run folder it records in (`PENDING_SUBMISSION_FILE`, with its
pid) just before its CSV is renamed into place, appends the line to submissions.jsonl after, and then removes the
journal. A journal whose submit is gone (killed between the rename and the append) names a CSV that is in place
when that file's sha256 is the line's: the next submit in that folder appends it before its own journal
(`settle_pending`) and `runs` lists it meanwhile (`unrecorded_lines`); one whose CSV never took its place is
removed.

Stdlib only: `runs` reads these without torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from liverctl import files
from liverctl.files import file_sha256, write_atomic
from liverctl.runs.folder import PENDING_SUBMISSION_FILE, SUBMISSIONS_FILE


def record_line(record: dict) -> str:
    """The line of submissions.jsonl that holds `record` (without its newline)."""
    return json.dumps(record)


def write_pending(run_dirs: Iterable[str | os.PathLike], record: dict) -> list[Path]:
    """The journal of `record` in each run folder, written before the CSV takes its place; a folder that cannot
    be written to (attached read-only) gets none, as it gets no line (`record_submission` says so)."""
    written = []
    for run_dir in run_dirs:
        if not os.access(run_dir, os.W_OK):
            continue
        settle_pending(run_dir)  # before this submit's CSV may replace one of theirs
        path = Path(run_dir) / PENDING_SUBMISSION_FILE.format(pid=os.getpid())
        written.append(write_atomic(path, record_line(record) + "\n", what="the submission's journal"))
    return written


def append_line(path: Path, line: str) -> None:
    """Append `line` to submissions.jsonl at `path`, on a line of its own after a torn last line (a submit
    killed mid-write), fsynced. OSError as it comes."""
    files.unshare_hard_link(path, what="submissions.jsonl")  # a hard-linked copy's (cp -al) stays the copy's
    with open(path, "a+b") as fh:
        torn = fh.seek(0, os.SEEK_END) > 0 and fh.seek(-1, os.SEEK_END) >= 0 and fh.read(1) != b"\n"
        fh.write((("\n" if torn else "") + line + "\n").encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def _dead_journals(run_dir: Path) -> Iterator[tuple[Path, str, bool]]:
    """(journal, its line, whether the CSV it names is in place) for each journal of a submit that is gone."""
    prefix, suffix = PENDING_SUBMISSION_FILE.split("{pid}")
    for path in run_dir.glob(f"{prefix}*{suffix}"):
        pid = path.name.removeprefix(prefix).removesuffix(suffix)
        if not (pid.isdigit() and pid.isascii()):
            continue
        if int(pid) != os.getpid() and not files.process_gone(int(pid)):
            continue  # a submit on its way to the append (this process's own pid: a gone one's, reused)
        try:
            line = path.read_text(encoding="utf-8").strip()
            record = json.loads(line)
            csv = Path(record["csv"])
            # a regular file only: a journal in a run folder from someone else may name /dev/zero or a FIFO
            in_place = csv.is_file() and file_sha256(csv) == record["sha256"]
        except (OSError, ValueError, TypeError, KeyError, RecursionError):  # torn, not ours, or the CSV is gone
            line, in_place = "", False
        yield path, line, in_place


def _recorded(run_dir: Path) -> set[str]:
    try:
        return {line.strip() for line in (run_dir / SUBMISSIONS_FILE).read_text(encoding="utf-8",
                                                                                  errors="replace").splitlines()}
    except FileNotFoundError:
        return set()


def unrecorded_lines(run_dir: str | os.PathLike, recorded: Iterable[str]) -> list[str]:
    """The lines of submissions a killed submit put in place but did not append (`recorded`: the lines of
    submissions.jsonl as read), for `runs`: they are the run's submissions too."""
    recorded = {line.strip() for line in recorded}
    return [line for _, line, in_place in _dead_journals(Path(run_dir)) if in_place and line not in recorded]


def settle_pending(run_dir: str | os.PathLike) -> list[str]:
    """Append to submissions.jsonl the line of each submission a killed submit put in place without recording
    it, and remove every journal of a submit that is gone; returns the lines appended. Called by a submit before
    it writes its own journal (`write_pending`)."""
    run_dir = Path(run_dir)
    appended = []
    for path, line, in_place in _dead_journals(run_dir):
        if in_place and line not in _recorded(run_dir):
            append_line(run_dir / SUBMISSIONS_FILE, line)
            appended.append(line)
        path.unlink(missing_ok=True)
    return appended
