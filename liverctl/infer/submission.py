"""The submission CSV (DESIGN.md, Submission): writer, sample-submission support, reader/validator.

One row per test slice: id `<case id>_<z>` and the run-length encoding (`liverctl.infer.rle`) of
`dataobj[..., z]`, columns `id,rle`, an empty mask written `1 0`. Given a sample submission, its
header, row order and empty-mask token are used instead, and its ids must be exactly the test slices.

The writer checks itself: each case's strings are decoded again and compared with its mask, and the
finished temporary file is read back (once: its sha256 is taken from the same bytes), validated and
compared row by row with those checked strings before it is renamed into place. The read-back does
not parse again a string identical to the checked one for its row (it would find nothing new); any
other string is parsed as from a stranger, and then fails the row comparison anyway. A failed or
interrupted write leaves no CSV that looks complete.

The reader collects every problem (bad header, unknown / duplicate / missing ids, malformed RLE,
runs leaving the image) with its line number, so a user sees them all at once (the first
`MAX_PROBLEMS_KEPT`, and how many there are). It reads the file as it parses it (`CsvReader`), never
all of it at once: what it holds is the runs of the rows it accepts, each id once, so a file of
millions of short rows or one line of gigabytes costs no more memory than a valid submission of the
same cases; a row longer than any row for its images can be (`max_row_chars`) is refused when it
gets there.
"""

from __future__ import annotations

import codecs
import collections
import csv
import hashlib
import io
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liverctl.errors import LiverctlError
from liverctl.files import atomic_open
from liverctl.infer import rle
from liverctl.plural import agree, plural
from liverctl.printable import quoted

DEFAULT_HEADER = ("id", "rle")


def slice_id(case_id: str, z: int) -> str:
    return f"{case_id}_{z}"


# A slice number of more digits is beyond any volume's: read as 10**18, never converted (int() refuses 4300 digits
# and more with a ValueError, and a CSV is anyone's file).
MAX_SLICE_DIGITS = 18


def split_slice_id(text: str) -> tuple[str, int] | None:
    """`"<case>_<z>"` -> (case, z); None unless it ends in `_<z>` written as `slice_id` writes it: ASCII
    digits, no leading zero (`7_00`, `7_０`, `7_²` name no slice). z of more than `MAX_SLICE_DIGITS` digits: 10**18."""
    case, sep, z = text.rpartition("_")
    if not sep or not case or not (z.isascii() and z.isdigit()) or (len(z) > 1 and z[0] == "0"):
        return None
    return case, int(z) if len(z) <= MAX_SLICE_DIGITS else 10**MAX_SLICE_DIGITS


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submission; `line` is the 1-based line in the CSV (None: file-wide)."""

    line: int | None
    message: str
    row_id: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        if self.row_id is not None:
            where += f" (id {quoted(self.row_id, 40, sized=True)})"
        return f"{where}: {self.message}"


# A file with a problem on every line of millions keeps the first of them (and counts the others).
MAX_PROBLEMS_KEPT = 1000


class MalformedSubmission(LiverctlError):
    """A submission with problems; `problems` lists them (the first `MAX_PROBLEMS_KEPT`), `count` is how
    many there are; the message names the count and the first."""

    def __init__(self, path: str | os.PathLike, problems: list[Problem], count: int | None = None):
        self.problems = problems
        self.count = len(problems) if count is None else count
        more = f" (and {self.count - 1} more)" if self.count > 1 else ""
        super().__init__(f"malformed submission, {plural(self.count, 'problem')}: {problems[0]}{more}", path=path)


class _Problems(list):
    """The problems found so far: the first `MAX_PROBLEMS_KEPT` kept, every one counted."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def append(self, problem: Problem) -> None:
        self.count += 1
        if len(self) < MAX_PROBLEMS_KEPT:
            super().append(problem)

    def __iadd__(self, problems):  # type: ignore[override]
        for problem in problems:
            self.append(problem)
        return self


# --------------------------------------------------------------------------------------------- sample


@dataclass(frozen=True)
class SampleSubmission:
    path: Path
    header: tuple[str, str]
    ids: list[str]
    empty: str

    def check_cases(self, n_slices: Mapping[str, int]) -> None:
        """Fail in one line unless the sample's ids are exactly the slices of these cases."""
        expected = {slice_id(c, z) for c, n in n_slices.items() for z in range(n)}
        given = set(self.ids)
        uncovered = sorted(given - expected)
        extra = sorted(expected - given)
        if not uncovered and not extra:
            return
        parts = []
        if uncovered:
            parts.append(f"{plural(len(uncovered), 'sample id')} {agree(len(uncovered), 'matches', 'match')} "
                         f"no test slice (e.g. {quoted(uncovered[0], 40, sized=True)})")
        if extra:
            parts.append(f"{plural(len(extra), 'test slice')} {agree(len(extra), 'is', 'are')} not in the sample "
                         f"(e.g. {quoted(extra[0])})")
        raise LiverctlError(
            "; ".join(parts) + f" ({plural(len(n_slices), 'test case')} in the store); is this the right store?",
            path=self.path,
        )


def check_sample_path(path: str | os.PathLike) -> Path:
    """The sample submission's path; LiverctlError unless it is a file (`submit` asks before loading models)."""
    return _csv_file(path, "sample submission")


def _csv_file(path: str | os.PathLike, what: str) -> Path:
    """`path` where it is a file; else one line: a folder given for it said "not found" beside it."""
    path = Path(path)
    if path.is_dir():
        raise LiverctlError(f"is a folder, expected the {what} (a CSV file)", path=path)
    if not path.is_file():
        raise LiverctlError(f"{what} not found", path=path)
    return path


def read_sample(path: str | os.PathLike, n_slices: Mapping[str, int] | None = None) -> SampleSubmission:
    """Read a sample submission: its two-column header, its ids in order, and its empty-mask token.

    The empty token is the sample's most common value that decodes to an empty mask (`1 0`, `""`, ...);
    `1 0` if the sample has none. `n_slices` (test case id -> slice count: the store's): the read stops at
    the first id beyond their number, one line (such a sample can never match them, `check_cases`; read to
    its end, 8.7M ids took 1.2 GB).
    """
    path = check_sample_path(path)
    most = sum(n_slices.values()) if n_slices is not None else None
    rows = iter(CsvReader(path, "sample submission"))
    first = next(rows, None)
    if first is None or len(first[1]) != 2:
        raise LiverctlError("sample submission needs a two-column header such as 'id,rle'", path=path)
    header = (first[1][0], first[1][1])
    if split_slice_id(header[0]) is not None:  # written above rows of that shape, it would read back as one
        raise LiverctlError(
            f"sample submission has no header: its first row {quoted(','.join(header), 60, sized=True)} is a data row; "
            "expected e.g. 'id,rle'",
            path=path,
        )
    first_line: dict[str, int] = {}  # id -> its line, in the sample's order
    empties: collections.Counter = collections.Counter()
    for line, row in rows:
        if not row:
            continue
        if len(row) != 2:
            raise LiverctlError(f"line {line}: expected 2 columns, got {len(row)}", path=path)
        if row[0] in first_line:  # where it is: a file of one id repeated millions of times is not read to its end
            raise LiverctlError(
                f"line {line}: sample submission repeats id {quoted(row[0], 40, sized=True)} (first on line {first_line[row[0]]})",
                path=path,
            )
        first_line[row[0]] = line
        if most is not None and len(first_line) > most:
            raise LiverctlError(
                f"line {line}: sample submission has more ids than the store has test slices: {len(first_line)} "
                f"ids by this line (read no further), {plural(most, 'test slice')} in "
                f"{plural(len(n_slices), 'test case')}; is this the right store?",
                path=path,
            )
        try:
            if len(rle.parse_runs(row[1])) == 0:
                empties[row[1]] += 1
        except rle.RLEFormatError:
            pass
    if not first_line:
        raise LiverctlError("sample submission has no rows", path=path)
    empty = empties.most_common(1)[0][0] if empties else rle.EMPTY_RLE
    return SampleSubmission(path=path, header=header, ids=list(first_line), empty=empty)


# --------------------------------------------------------------------------------------------- writer


def decode_volume(texts: list[str], shape: tuple[int, int, int]) -> np.ndarray:
    """One RLE string per slice -> bool (X, Y, Z); the exact inverse of `rle.encode_volume`."""
    n_pixels = shape[0] * shape[1]
    return rle.decode_volume_runs([rle.parse_runs(t, n_pixels) for t in texts], shape)


@dataclass
class SubmissionSummary:
    path: Path
    rows: int
    cases: int
    empty_rows: int
    sha256: str


@dataclass
class SubmissionWriter:
    """Collects masks case by case, then writes, self-checks and renames the CSV in `close()`.

    Nothing touches the disk before `close()`, so a failure while adding cases leaves no file.
    `expected` (case id -> number of slices), when given, must be covered exactly by the added cases.
    """

    path: Path
    sample: SampleSubmission | None = None
    expected: Mapping[str, int] | None = None
    _rows: dict[str, str] = field(default_factory=dict)
    _shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def empty(self) -> str:
        return self.sample.empty if self.sample else rle.EMPTY_RLE

    def add_case(self, case_id: str, mask: np.ndarray) -> None:
        """Encode every slice of one case. Shape: mask (X, Y, Z), slice z = `dataobj[..., z]`."""
        mask = np.asarray(mask)
        if mask.ndim != 3:
            raise ValueError(f"case {case_id}: expected an (X, Y, Z) mask, got shape {mask.shape}")
        if case_id in self._shapes:
            raise ValueError(f"case {case_id} added twice")
        if self.expected is not None and case_id not in self.expected:
            raise LiverctlError(f"case {quoted(case_id)} is not one of the expected test cases", path=self.path)
        texts = rle.encode_volume(mask, empty=self.empty)
        # Self-check, part 1: the strings decode (independently of the encoder) to exactly this mask.
        if not np.array_equal(decode_volume(texts, mask.shape), mask.astype(bool, copy=False)):
            raise LiverctlError(
                f"self-check failed: case {quoted(case_id)} does not decode to its mask (encoder bug); nothing written",
                path=self.path,
            )
        self._shapes[case_id] = mask.shape
        for z, text in enumerate(texts):
            self._rows[slice_id(case_id, z)] = text

    def _ordered_ids(self) -> list[str]:
        if self.expected is not None:
            missing = sorted(set(self.expected) - set(self._shapes))
            if missing:
                raise LiverctlError(f"no prediction for {agree(len(missing), 'test case', 'test cases')} "
                                    f"{', '.join(missing)}", path=self.path)
            wrong = [c for c, n in self.expected.items() if self._shapes[c][2] != n]
            if wrong:
                c = wrong[0]
                raise LiverctlError(
                    f"case {c}: mask has {self._shapes[c][2]} slices, expected {self.expected[c]}", path=self.path
                )
        if self.sample is None:
            return list(self._rows)
        have = set(self._rows)
        uncovered = [i for i in self.sample.ids if i not in have]
        if uncovered:
            raise LiverctlError(
                f"{plural(len(uncovered), 'id')} of the sample {agree(len(uncovered), 'has', 'have')} no prediction "
                f"(e.g. {quoted(uncovered[0], 40, sized=True)})",
                path=self.sample.path,
            )
        extra = have - set(self.sample.ids)
        if extra:
            raise LiverctlError(
                f"{plural(len(extra), 'predicted slice')} {agree(len(extra), 'is', 'are')} not in the sample "
                f"(e.g. {quoted(sorted(extra)[0])})",
                path=self.sample.path,
            )
        return list(self.sample.ids)

    def close(self, before_rename: Callable[[SubmissionSummary], None] | None = None) -> SubmissionSummary:
        """Write to a temporary file, decode it back and compare with the masks, then rename.
        `before_rename(summary)` runs on the checked file just before it takes its place (submit's journal)."""
        ids = self._ordered_ids()
        header = self.sample.header if self.sample else DEFAULT_HEADER
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path, "w", newline="", what="the submission CSV") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows((i, self._rows[i]) for i in ids)
            fh.flush()
            os.fsync(fh.fileno())  # on disk before its journal says it is (a full disk: this file's line)
            summary = SubmissionSummary(
                path=self.path,
                rows=len(ids),
                cases=len(self._shapes),
                empty_rows=sum(1 for i in ids if self._rows[i] == self.empty),
                sha256=self._self_check(Path(fh.name), header),
            )
            if before_rename is not None:
                before_rename(summary)
        return summary

    def _self_check(self, written: Path, header: tuple[str, str]) -> str:
        """Part 2: the file as written is a valid submission (header, every id once, nothing else) and
        holds exactly the checked strings. One read of it for both checks and its sha256 (the renamed
        file's: the same bytes). A row's RLE that is the very string part 1 parsed and compared with
        its mask, for the same shape, is not parsed again (a third of `submit`'s time on a large CSV)."""
        reader = CsvReader(written, "submission", max_row_chars=max_row_chars(self._shapes))
        # A problem is named on the CSV being written (the temporary file is gone once this fails).
        _, differing = _validate(self.path, reader, self._shapes, header=header, checked=self._rows)
        if differing:  # a valid row, but not the string checked against its mask
            raise LiverctlError(
                f"self-check failed: row {quoted(next(iter(differing)))} reads back differently from what was written; "
                "nothing written",
                path=self.path,
            )
        return reader.sha256


def write_submission(
    path: str | os.PathLike,
    masks: Iterable[tuple[str, np.ndarray]],
    *,
    sample: SampleSubmission | None = None,
    expected: Mapping[str, int] | None = None,
) -> SubmissionSummary:
    """Write (case id, (X, Y, Z) mask) pairs as a checked submission CSV (see `SubmissionWriter`)."""
    writer = SubmissionWriter(Path(path), sample=sample, expected=expected)
    for case_id, mask in masks:
        writer.add_case(case_id, mask)
    return writer.close()


# --------------------------------------------------------------------------------------------- reader


@dataclass
class Submission:
    """A parsed, valid submission: runs per row id, and the shapes it was checked against."""

    path: Path
    header: tuple[str, str]
    runs: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, int, int]]
    sha256: str  # of the bytes parsed: `evaluate` names the file it scored by it

    def volume(self, case_id: str) -> np.ndarray:
        """Decode all slices of one case. Shape: -> bool (X, Y, Z)."""
        shape = self.shapes[case_id]
        return rle.decode_volume_runs([self.runs[slice_id(case_id, k)] for k in range(shape[2])], shape)


def read_submission(
    path: str | os.PathLike,
    shapes: Mapping[str, tuple[int, ...]],
    *,
    header: tuple[str, str] | None = DEFAULT_HEADER,
) -> Submission:
    """Parse and validate a submission against the cases' (X, Y, Z) shapes.

    `header`: the required header, or None to accept any two-column header that is not itself a data
    row. Every slice of every case in `shapes` must appear exactly once, and nothing else. Raises
    `MalformedSubmission` listing every problem with its line.
    """
    path = _csv_file(path, "submission")
    shapes = {c: tuple(int(v) for v in s) for c, s in shapes.items()}
    reader = CsvReader(path, "submission", max_row_chars=max_row_chars(shapes))  # type: ignore[arg-type]
    found_header, runs = _validate(path, reader, shapes, header=header)  # type: ignore[arg-type]
    return Submission(path=path, header=found_header, runs=runs, shapes=shapes,  # type: ignore[arg-type]
                      sha256=reader.sha256)


def max_row_chars(shapes: Mapping[str, tuple[int, int, int]]) -> int:
    """The most characters a row of a submission for these (X, Y, Z) shapes can need: the longest id,
    a comma, quotes, the longest RLE string of the largest slice (`rle.max_text_length`) and a line end;
    never less than `MIN_MAX_ROW_CHARS` (a header, a small image's row spelled oddly)."""
    if not shapes:
        return DEFAULT_MAX_ROW_CHARS
    longest_id = max(len(slice_id(c, max(s[2] - 1, 0))) for c, s in shapes.items())
    needed = longest_id + 5 + rle.max_text_length(max(s[0] * s[1] for s in shapes.values()))
    return max(needed, MIN_MAX_ROW_CHARS)


def _validate(
    path: Path,
    rows: Iterable[tuple[int, list[str]]],
    shapes: Mapping[str, tuple[int, int, int]],
    *,
    header: tuple[str, str] | None,
    checked: Mapping[str, str] | None = None,
) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """Check a CSV as a submission -> (its header, row id -> runs), or raise `MalformedSubmission`.

    `checked` (the writer's self-check): row id -> an RLE string already parsed and checked against that
    row's shape; a row holding exactly it is not parsed again and has no entry in the runs returned.
    `rows` are read to their end (a `CsvReader` then knows its sha256).
    """
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        raise MalformedSubmission(path, [Problem(None, "the file is empty")])
    found_header = tuple(first[1])
    # A first row shaped like `<case>_<z>` is data (a file without a header), even for an unknown case.
    looks_like_data = bool(found_header) and split_slice_id(found_header[0]) is not None
    problems = _Problems()
    problems += _header_problems(found_header, header, looks_like_data)
    data_rows = itertools.chain([first], rows) if looks_like_data else rows
    runs, first_line = _read_rows(data_rows, shapes, problems, checked or {})
    problems += _missing_slices(shapes, first_line)
    if problems.count:
        raise MalformedSubmission(path, list(problems), problems.count)
    return found_header, runs


def _header_problems(found: tuple[str, ...], header: tuple[str, str] | None, looks_like_data: bool) -> list[Problem]:
    """The header as found against the one required (or, for None, any two-column non-data header)."""
    if header is not None and found != tuple(header):
        return [Problem(1, f"bad header {quoted(','.join(found), 80, sized=True)}: expected {','.join(header)!r}")]
    if header is None and (len(found) != 2 or looks_like_data):
        what = "a data row, not a header" if looks_like_data else plural(len(found), "column")
        return [Problem(1, f"bad header {quoted(','.join(found), 80, sized=True)}: {what}; expected e.g. 'id,rle'")]
    return []


def _read_rows(rows: Iterable[tuple[int, list[str]]], shapes: Mapping[str, tuple[int, int, int]],
               problems: list[Problem], checked: Mapping[str, str]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Parse the data rows -> (row id -> runs, row id -> its first line); what is wrong goes to `problems`.
    A row whose RLE is exactly `checked[row id]` is not parsed (see `_validate`)."""
    runs: dict[str, np.ndarray] = {}
    first_line: dict[str, int] = {}
    unknown: dict[str, list] = {}  # a case no test case is, its problem kept: [the problem's index, rows, last line]
    for line, row in rows:
        if not row:
            continue
        if len(row) != 2:
            problems.append(Problem(line, f"expected 2 columns (id, rle), got {len(row)}", row[0]))
            continue
        row_id, text = row
        parsed = split_slice_id(row_id)
        if parsed is None:
            problems.append(Problem(line, "unknown id: not <case id>_<slice number> (0, 1, ...)", row_id))
            continue
        if parsed[0] not in shapes:  # one problem per case: a CSV scored against the wrong labels is one line
            seen = unknown.get(parsed[0])
            if seen is not None:
                seen[1:] = [seen[1] + 1, line]
                continue
            if len(problems) < MAX_PROBLEMS_KEPT:  # so the cases held are as few as the problems kept
                unknown[parsed[0]] = [len(problems), 1, line]
            problems.append(Problem(line, "unknown id: no such test case", row_id))
            continue
        case, z = parsed
        x, y, n_slices = shapes[case]
        if z >= n_slices:
            problems.append(
                Problem(line, f"unknown id: case {quoted(case)} has {plural(n_slices, 'slice')} (0..{n_slices - 1})", row_id)
            )
            continue
        if row_id in first_line:
            problems.append(Problem(line, f"duplicate id (first on line {first_line[row_id]})", row_id))
            continue
        first_line[row_id] = line
        if checked.get(row_id) == text:
            continue
        try:
            runs[row_id] = rle.parse_runs(text, x * y)
        except rle.RLEFormatError as exc:
            problems.append(Problem(line, str(exc), row_id))
    for case, (index, count, last) in unknown.items():
        if count > 1:
            first = problems[index]
            problems[index] = Problem(first.line, f"unknown id: no such test case (case {quoted(case, 40, sized=True)}: "
                                      f"{plural(count, 'row')}, the last on line {last})", first.row_id)
    return runs, first_line


def _missing_slices(shapes: Mapping[str, tuple[int, int, int]], seen: Mapping[str, int]) -> list[Problem]:
    """One problem per case with slice ids absent from `seen`."""
    problems = []
    for case, (_, _, n_slices) in shapes.items():
        missing = [z for z in range(n_slices) if slice_id(case, z) not in seen]
        if missing:
            sample = ", ".join(slice_id(case, z) for z in missing[:3])
            problems.append(
                Problem(None, f"case {quoted(case)}: {len(missing)} of {plural(n_slices, 'slice id')} missing (e.g. {sample})")
            )
    return problems


# The most characters a row of a CSV may have where no image size bounds it (a sample submission): a
# noisy 512 x 512 slice takes ~1.2 MB, a 4096 x 4096 one at most ~150 MB.
DEFAULT_MAX_ROW_CHARS = 1 << 28
MIN_MAX_ROW_CHARS = 1 << 20
_READ_CHUNK = 1 << 18  # bytes read at a time (io.StringIO holds its text 4 bytes a character)


class CsvReader:
    """The rows of a CSV from someone else, read once as they are iterated: (the row's first line,
    row) pairs; then `sha256`, of the bytes they come from. Anything unreadable is one `LiverctlError`
    line naming the file and where.

    The file must be UTF-8 text (a byte-order mark is allowed); anything else (another encoding,
    binary garbage, a row the csv module cannot parse) is refused. Lines end as the csv module has them
    from a file opened with `newline=""` (`\\n`, `\\r\\n`, `\\r`). It is read a chunk at a time: a row longer
    than `max_row_chars` (one slice's RLE can be megabytes, never unbounded) is refused once it has
    grown past it, so no more than that and a chunk is held whatever the file holds.
    """

    def __init__(self, path: str | os.PathLike, what: str, *, max_row_chars: int = DEFAULT_MAX_ROW_CHARS):
        self.path = Path(path)
        self.what = what
        self.max_row_chars = max_row_chars
        self._sha256: str | None = None
        self._row_chars = 0  # characters of the row being read, over all its lines so far
        self._first = 1  # the first line of the row being read

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            raise RuntimeError("sha256 is known once every row has been read")
        return self._sha256

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        try:
            fh = open(self.path, "rb")
        except OSError as exc:
            raise LiverctlError(f"cannot read the {self.what}: {exc.strerror or exc}", path=self.path) from None
        digest = hashlib.sha256()
        with fh:
            reader = csv.reader(self._lines(fh, digest))
            # A field can be as long as a row may be: beyond the csv module's default limit (128 KiB).
            limit = csv.field_size_limit(max(csv.field_size_limit(), self.max_row_chars))
            try:
                first = self._first = 1
                while True:
                    try:
                        row = next(reader)
                    except StopIteration:
                        break
                    except csv.Error as exc:
                        raise LiverctlError(f"line {first}: not a valid CSV row ({exc})", path=self.path) from None
                    yield first, row
                    first = self._first = reader.line_num + 1
                    self._row_chars = 0
            finally:
                csv.field_size_limit(limit)
        self._sha256 = digest.hexdigest()

    def _lines(self, fh, digest) -> Iterator[str]:
        """The file's text line by line (line ends kept), decoded and hashed a chunk at a time."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0  # bytes read before this chunk
        pending: list[str] = []  # the pieces of a line that runs past the chunks read so far
        held = ""  # a chunk's last CR: its line may end CR LF
        at_start = True
        while True:
            chunk = fh.read(_READ_CHUNK)
            digest.update(chunk)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:  # exc.object: the bytes held back from the last chunk + this one
                at = offset - (len(exc.object) - len(chunk)) + exc.start
                raise LiverctlError(
                    f"{self.what} is not UTF-8 text (byte {at} is 0x{exc.object[exc.start]:02x}); save it as UTF-8 CSV",
                    path=self.path,
                ) from None
            if at_start and text:  # the first character decoded (a chunk can end inside it)
                text, at_start = text.removeprefix("\ufeff"), False
            offset += len(chunk)
            text = held + text
            held = "\r" if chunk and text.endswith("\r") else ""
            if held:
                text = text[:-1]
            for piece in io.StringIO(text, newline=""):  # LF, CR LF, CR: the ends csv expects
                self._grow(len(piece))
                if piece[-1] in "\r\n":
                    yield "".join(pending) + piece if pending else piece
                    pending = []
                else:  # the chunk ends inside this line
                    pending.append(piece)
            if not chunk:
                break
        if pending:
            yield "".join(pending)

    def _grow(self, chars: int) -> None:
        self._row_chars += chars
        if self._row_chars > self.max_row_chars:
            raise LiverctlError(
                f"line {self._first}: a row of more than {self.max_row_chars:,} characters, longer than any "
                f"row of a {self.what} for these images can be",
                path=self.path,
            )
