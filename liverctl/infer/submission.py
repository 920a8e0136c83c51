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
runs leaving the image) with its line number, so a user sees them all at once.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liverctl.errors import LiverctlError
from liverctl.files import atomic_open
from liverctl.infer import rle

DEFAULT_HEADER = ("id", "rle")


def slice_id(case_id: str, z: int) -> str:
    return f"{case_id}_{z}"


def split_slice_id(text: str) -> tuple[str, int] | None:
    """`"<case>_<z>"` -> (case, z); None unless it ends in `_<z>` written as `slice_id` writes it: ASCII
    digits, no leading zero (`7_00`, `7_０`, `7_²` name no slice)."""
    case, sep, z = text.rpartition("_")
    if not sep or not case or not (z.isascii() and z.isdigit()) or (len(z) > 1 and z[0] == "0"):
        return None
    return case, int(z)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submission; `line` is the 1-based line in the CSV (None: file-wide)."""

    line: int | None
    message: str
    row_id: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        if self.row_id is not None:
            where += f" (id {rle._clip(self.row_id)})"
        return f"{where}: {self.message}"


class MalformedSubmission(LiverctlError):
    """A submission with problems; `problems` lists them all, the message names the count and the first."""

    def __init__(self, path: str | os.PathLike, problems: list[Problem]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"malformed submission, {len(problems)} problem(s): {problems[0]}{more}", path=path)


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
            parts.append(f"{len(uncovered)} sample id(s) match no test slice (e.g. {uncovered[0]!r})")
        if extra:
            parts.append(f"{len(extra)} test slice(s) are not in the sample (e.g. {extra[0]!r})")
        raise LiverctlError(
            "; ".join(parts) + f" ({len(n_slices)} test case(s) in the store); is this the right store?",
            path=self.path,
        )


def read_sample(path: str | os.PathLike) -> SampleSubmission:
    """Read a sample submission: its two-column header, its ids in order, and its empty-mask token.

    The empty token is the sample's most common value that decodes to an empty mask (`1 0`, `""`, ...);
    `1 0` if the sample has none.
    """
    path = Path(path)
    if not path.is_file():
        raise LiverctlError("sample submission not found", path=path)
    rows = [row for _, row in read_csv_rows(path, "sample submission")]
    if not rows or len(rows[0]) != 2:
        raise LiverctlError("sample submission needs a two-column header such as 'id,rle'", path=path)
    header = (rows[0][0], rows[0][1])
    ids, empties = [], collections.Counter()
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise LiverctlError(f"line {line}: expected 2 columns, got {len(row)}", path=path)
        ids.append(row[0])
        try:
            if len(rle.parse_runs(row[1])) == 0:
                empties[row[1]] += 1
        except rle.RLEFormatError:
            pass
    if not ids:
        raise LiverctlError("sample submission has no rows", path=path)
    duplicates = [i for i, n in collections.Counter(ids).items() if n > 1]
    if duplicates:
        raise LiverctlError(f"sample submission repeats id {duplicates[0]!r}", path=path)
    empty = empties.most_common(1)[0][0] if empties else rle.EMPTY_RLE
    return SampleSubmission(path=path, header=header, ids=ids, empty=empty)


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
            raise LiverctlError(f"case {case_id!r} is not one of the expected test cases", path=self.path)
        texts = rle.encode_volume(mask, empty=self.empty)
        # Self-check, part 1: the strings decode (independently of the encoder) to exactly this mask.
        if not np.array_equal(decode_volume(texts, mask.shape), mask.astype(bool, copy=False)):
            raise LiverctlError(
                f"self-check failed: case {case_id!r} does not decode to its mask (encoder bug); nothing written",
                path=self.path,
            )
        self._shapes[case_id] = mask.shape
        for z, text in enumerate(texts):
            self._rows[slice_id(case_id, z)] = text

    def _ordered_ids(self) -> list[str]:
        if self.expected is not None:
            missing = sorted(set(self.expected) - set(self._shapes))
            if missing:
                raise LiverctlError(f"no prediction for test case(s) {', '.join(missing)}", path=self.path)
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
                f"{len(uncovered)} id(s) of the sample have no prediction (e.g. {uncovered[0]!r})",
                path=self.sample.path,
            )
        extra = have - set(self.sample.ids)
        if extra:
            raise LiverctlError(
                f"{len(extra)} predicted slice(s) are not in the sample (e.g. {sorted(extra)[0]!r})",
                path=self.sample.path,
            )
        return list(self.sample.ids)

    def close(self) -> SubmissionSummary:
        """Write to a temporary file, decode it back and compare with the masks, then rename."""
        ids = self._ordered_ids()
        header = self.sample.header if self.sample else DEFAULT_HEADER
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path, "w", newline="", what="the submission CSV") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows((i, self._rows[i]) for i in ids)
            fh.flush()
            sha256 = self._self_check(Path(fh.name), header)
        return SubmissionSummary(
            path=self.path,
            rows=len(ids),
            cases=len(self._shapes),
            empty_rows=sum(1 for i in ids if self._rows[i] == self.empty),
            sha256=sha256,
        )

    def _self_check(self, written: Path, header: tuple[str, str]) -> str:
        """Part 2: the file as written is a valid submission (header, every id once, nothing else) and
        holds exactly the checked strings. One read of it for both checks and its sha256 (the renamed
        file's: the same bytes). A row's RLE that is the very string part 1 parsed and compared with
        its mask, for the same shape, is not parsed again (a third of `submit`'s time on a large CSV)."""
        csv_file = read_csv_file(written, "submission")
        _validate(written, csv_file, self._shapes, header=header, checked=self._rows)
        for _, row in csv_file.rows[1:]:
            if self._rows.get(row[0]) != row[1]:
                raise LiverctlError(
                    f"self-check failed: row {row[0]!r} reads back differently from what was written; nothing written",
                    path=self.path,
                )
        return csv_file.sha256


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
    path = Path(path)
    if not path.is_file():
        raise LiverctlError("submission not found", path=path)
    return parse_submission(path, read_csv_file(path, "submission"), shapes, header=header)


def parse_submission(
    path: Path,
    csv_file: CsvFile,
    shapes: Mapping[str, tuple[int, ...]],
    *,
    header: tuple[str, str] | None = DEFAULT_HEADER,
) -> Submission:
    """`read_submission` of a CSV already read (`read_csv_file`) from `path`."""
    shapes = {c: tuple(int(v) for v in s) for c, s in shapes.items()}
    found_header, runs = _validate(path, csv_file, shapes, header=header)
    return Submission(path=path, header=found_header, runs=runs, shapes=shapes,  # type: ignore[arg-type]
                      sha256=csv_file.sha256)


def _validate(
    path: Path,
    csv_file: CsvFile,
    shapes: Mapping[str, tuple[int, int, int]],
    *,
    header: tuple[str, str] | None,
    checked: Mapping[str, str] | None = None,
) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """Check a CSV as a submission -> (its header, row id -> runs), or raise `MalformedSubmission`.

    `checked` (the writer's self-check): row id -> an RLE string already parsed and checked against that
    row's shape; a row holding exactly it is not parsed again and has no entry in the runs returned.
    """
    rows = csv_file.rows
    if not rows:
        raise MalformedSubmission(path, [Problem(None, "the file is empty")])
    found_header = tuple(rows[0][1])
    # A first row shaped like `<case>_<z>` is data (a file without a header), even for an unknown case.
    looks_like_data = bool(found_header) and split_slice_id(found_header[0]) is not None
    problems = _header_problems(found_header, header, looks_like_data)
    runs, first_line = _read_rows(rows if looks_like_data else rows[1:], shapes, problems, checked or {})
    problems += _missing_slices(shapes, first_line)
    if problems:
        raise MalformedSubmission(path, problems)
    return found_header, runs


def _header_problems(found: tuple[str, ...], header: tuple[str, str] | None, looks_like_data: bool) -> list[Problem]:
    """The header as found against the one required (or, for None, any two-column non-data header)."""
    if header is not None and found != tuple(header):
        return [Problem(1, f"bad header {rle._clip(','.join(found), 80)}: expected {','.join(header)!r}")]
    if header is None and (len(found) != 2 or looks_like_data):
        what = "a data row, not a header" if looks_like_data else f"{len(found)} column(s)"
        return [Problem(1, f"bad header {rle._clip(','.join(found), 80)}: {what}; expected e.g. 'id,rle'")]
    return []


def _read_rows(rows: list[tuple[int, list[str]]], shapes: Mapping[str, tuple[int, int, int]],
               problems: list[Problem], checked: Mapping[str, str]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Parse the data rows -> (row id -> runs, row id -> its first line); what is wrong goes to `problems`.
    A row whose RLE is exactly `checked[row id]` is not parsed (see `_validate`)."""
    runs: dict[str, np.ndarray] = {}
    first_line: dict[str, int] = {}
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
        if parsed[0] not in shapes:
            problems.append(Problem(line, "unknown id: no such test case", row_id))
            continue
        case, z = parsed
        x, y, n_slices = shapes[case]
        if z >= n_slices:
            problems.append(
                Problem(line, f"unknown id: case {case!r} has {n_slices} slices (0..{n_slices - 1})", row_id)
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
    return runs, first_line


def _missing_slices(shapes: Mapping[str, tuple[int, int, int]], seen: Mapping[str, int]) -> list[Problem]:
    """One problem per case with slice ids absent from `seen`."""
    problems = []
    for case, (_, _, n_slices) in shapes.items():
        missing = [z for z in range(n_slices) if slice_id(case, z) not in seen]
        if missing:
            sample = ", ".join(slice_id(case, z) for z in missing[:3])
            problems.append(
                Problem(None, f"case {case!r}: {len(missing)} of {n_slices} slice id(s) missing (e.g. {sample})")
            )
    return problems


@dataclass(frozen=True)
class CsvFile:
    """A CSV as read once (`read_csv_file`): its rows and the sha256 of the bytes they come from."""

    rows: list[tuple[int, list[str]]]  # (1-based line, row)
    sha256: str


def read_csv_rows(path: str | os.PathLike, what: str) -> list[tuple[int, list[str]]]:
    """(1-based line, row) of every row of a CSV from someone else, or one `LiverctlError` line
    (`read_csv_file`)."""
    return read_csv_file(path, what).rows


def read_csv_file(path: str | os.PathLike, what: str) -> CsvFile:
    """Every row of a CSV from someone else with the sha256 of its bytes, from one read of the file, or
    one `LiverctlError` line.

    The file must be UTF-8 text (a byte-order mark is allowed); anything else (another encoding,
    binary garbage, a row the csv module cannot parse) is refused naming the file and where. A field
    may be as long as the file (one slice's RLE can be megabytes).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        sha256 = hashlib.sha256(raw).hexdigest()
        text = raw.decode("utf-8-sig")
        del raw  # not held beside the text and the rows of a large file
    except UnicodeDecodeError as exc:
        raise LiverctlError(
            f"{what} is not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}); save it as UTF-8 CSV",
            path=path,
        ) from None
    except OSError as exc:
        raise LiverctlError(f"cannot read the {what}: {exc.strerror or exc}", path=path) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    # One slice's RLE can far exceed the csv module's default field limit (128 KiB): a noisy 512 x 512
    # mask takes ~1.2 MB. No field can be longer than the text, which is already in memory.
    limit = csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    try:
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise LiverctlError(f"line {reader.line_num}: not a valid CSV row ({exc})", path=path) from None
    finally:
        csv.field_size_limit(limit)
    return CsvFile(rows=rows, sha256=sha256)
