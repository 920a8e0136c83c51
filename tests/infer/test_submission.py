import numpy as np
import pytest
from file_reads import count_reads

from liverctl.errors import LiverctlError
from liverctl.infer import rle
from liverctl.infer.submission import (
    MalformedSubmission,
    SubmissionWriter,
    read_sample,
    read_submission,
    split_slice_id,
    write_submission,
)


def _masks(seed=0):
    rng = np.random.default_rng(seed)
    return {"7": rng.random((6, 5, 3)) < 0.3, "liver_12": rng.random((4, 4, 2)) < 0.5}


def _shapes(masks):
    return {c: m.shape for c, m in masks.items()}


def test_write_then_read_round_trip(tmp_path):
    masks = _masks()
    masks["7"][..., 1] = False  # one empty slice
    out = tmp_path / "submission.csv"
    summary = write_submission(out, masks.items())
    lines = out.read_text().splitlines()
    assert lines[0] == "id,rle"
    assert lines[1].startswith("7_0,")
    assert "7_1,1 0" in lines
    assert summary.rows == 5 and summary.cases == 2 and summary.empty_rows == 1
    parsed = read_submission(out, _shapes(masks))
    for case, mask in masks.items():
        assert np.array_equal(parsed.volume(case), mask)
    assert not list(tmp_path.glob(".*tmp"))


def test_row_matches_rle_of_dataobj_slice(tmp_path):
    mask = np.zeros((3, 2, 2), dtype=bool)
    mask[..., 1] = [[1, 0], [1, 1], [0, 1]]
    write_submission(tmp_path / "s.csv", [("0", mask)])
    assert (tmp_path / "s.csv").read_text().splitlines()[1:] == ["0_0,1 0", "0_1,1 2 5 2"]


def test_case_ids_with_underscores_split_on_last():
    assert split_slice_id("liver_12_30") == ("liver_12", 30)
    assert split_slice_id("abc") is None
    assert split_slice_id("abc_x") is None


@pytest.mark.parametrize("row_id", ["7_²", "7_٣", "7_０", "7_00", "7_01", "7_+1", "7_ 1"])
def test_a_slice_number_not_written_as_slice_id_writes_it_is_an_unknown_id(tmp_path, row_id):
    """`7_²` was a traceback (str.isdigit accepts '²', int() does not), `7_٣` was read as slice 3, and
    `7_00` was taken for slice 0 without a word on its line (only 'slice 7_0 missing')."""
    path = tmp_path / "s.csv"
    path.write_text(f"id,rle\n{row_id},1 0\n7_1,1 0\n7_2,1 0\n7_3,1 0\n")
    with pytest.raises(MalformedSubmission) as info:
        read_submission(path, {"7": (2, 2, 4)})
    assert str(info.value.problems[0]) == (
        f"line 2 (id {row_id!r}): unknown id: not <case id>_<slice number> (0, 1, ...)"
    )


def test_sample_controls_header_order_and_empty_token(tmp_path):
    masks = _masks()
    masks["liver_12"][..., 0] = False
    ids = ["liver_12_1", "7_2", "7_0", "liver_12_0", "7_1"]
    sample_path = tmp_path / "sample.csv"
    sample_path.write_text("ImageId,EncodedPixels\n" + "".join(f"{i},\n" for i in ids))
    sample = read_sample(sample_path)
    assert sample.empty == ""
    out = tmp_path / "sub.csv"
    write_submission(out, masks.items(), sample=sample)
    lines = out.read_text().splitlines()
    assert lines[0] == "ImageId,EncodedPixels"
    assert [row.split(",")[0] for row in lines[1:]] == ids
    assert "liver_12_0," in lines
    parsed = read_submission(out, _shapes(masks), header=("ImageId", "EncodedPixels"))
    assert np.array_equal(parsed.volume("7"), masks["7"])


def test_a_sample_whose_first_row_is_data_is_refused_when_read(tmp_path):
    """A sample `4_0,rle / 4_1,1 0 / ...` gave its first row as the header: submit predicted every case,
    then its self-check refused its own CSV naming the temporary file ('.out.csv.123.tmp: malformed
    submission ... line 1 (id '4_0'): not an integer: 'rle'')."""
    sample = tmp_path / "sample.csv"
    sample.write_text("7_0,rle\n7_1,1 0\n7_2,1 0\nliver_12_0,1 0\nliver_12_1,1 0\n")
    with pytest.raises(LiverctlError) as info:
        read_sample(sample)
    assert str(info.value) == (
        f"{sample}: sample submission has no header: its first row '7_0,rle' is a data row; expected e.g. 'id,rle'"
    )


def test_a_sample_that_repeats_an_id_is_refused_on_that_line_without_reading_on(tmp_path):
    """The sample's ids were all read, then counted: 100 MB of one repeated id took ~1 GB before the one-line
    refusal, which did not say where. Now the first repeat ends the read (the bytes after it are never
    decoded: here they are not UTF-8)."""
    sample = tmp_path / "sample.csv"
    sample.write_bytes(b"id,rle\n7_0,1 0\n7_1,1 0\n7_0,1 0\n" + b"7_0,1 0\n" * 100_000 + b"\xff\n")  # 800 KB
    with pytest.raises(LiverctlError) as info:
        read_sample(sample)
    assert str(info.value) == f"{sample}: line 4: sample submission repeats id '7_0' (first on line 2)"


def test_sample_ids_not_covered_fail_and_leave_no_csv(tmp_path):
    masks = _masks()
    sample_path = tmp_path / "sample.csv"
    sample_path.write_text("id,rle\n7_0,1 0\n7_1,1 0\n7_2,1 0\n99_0,1 0\n")
    sample = read_sample(sample_path)
    with pytest.raises(LiverctlError, match="1 sample id matches no test slice"):
        sample.check_cases({c: m.shape[2] for c, m in masks.items()})
    out = tmp_path / "sub.csv"
    with pytest.raises(LiverctlError, match="1 id of the sample has no prediction"):
        write_submission(out, masks.items(), sample=sample)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [sample_path]


def test_a_long_sample_id_is_cut_in_the_line_that_names_it(tmp_path):
    """A sample id of 5000 characters was quoted whole in the one line refusing it, by check_cases (submit
    --sample) and the writer: a 5 kB line (scripts/fuzz_readers.py csv, seed 0 case 42)."""
    masks = _masks()
    long_id = "7_" + "9" * 5000
    sample_path = tmp_path / "sample.csv"
    sample_path.write_text(f"id,rle\n7_0,1 0\n7_1,1 0\n7_2,1 0\n{long_id},1 0\n")
    sample = read_sample(sample_path)
    with pytest.raises(LiverctlError) as info:
        sample.check_cases({c: m.shape[2] for c, m in masks.items()})
    assert str(info.value).startswith(f"{sample_path}: 1 sample id matches no test slice (e.g. '7_9999")
    assert "… (5002 characters)" in str(info.value) and len(str(info.value)) < 300
    with pytest.raises(LiverctlError) as info:
        write_submission(tmp_path / "sub.csv", masks.items(), sample=sample)
    assert "… (5002 characters)" in str(info.value) and len(str(info.value)) < 300


def test_expected_cases_must_all_be_written(tmp_path):
    masks = _masks()
    out = tmp_path / "sub.csv"
    with pytest.raises(LiverctlError, match="no prediction for test case"):
        write_submission(out, [("7", masks["7"])], expected={"7": 3, "liver_12": 2})
    assert not out.exists()


def test_self_check_catches_a_broken_encoder(tmp_path, monkeypatch):
    masks = _masks()
    real = rle.encode_volume

    def off_by_one(volume, empty=rle.EMPTY_RLE):
        texts = real(volume, empty)
        return [t if t == empty else t.replace(t.split()[0], str(int(t.split()[0]) + 1), 1) for t in texts]

    monkeypatch.setattr(rle, "encode_volume", off_by_one)
    out = tmp_path / "sub.csv"
    writer = SubmissionWriter(out)
    with pytest.raises(LiverctlError, match="self-check failed: case '7'"):
        writer.add_case("7", masks["7"])
    assert list(tmp_path.iterdir()) == []


def test_self_check_catches_a_file_that_reads_back_differently(tmp_path, monkeypatch):
    import csv

    real_writer = csv.writer

    class LossyWriter:
        """Writes every row, but the first data row loses its runs (a stand-in for a bad write)."""

        def __init__(self, fh, **kw):
            self._w = real_writer(fh, **kw)

        def writerow(self, row):
            self._w.writerow(row)

        def writerows(self, rows):
            rows = list(rows)
            rows[0] = (rows[0][0], "1 0")
            self._w.writerows(rows)

    monkeypatch.setattr(csv, "writer", LossyWriter)
    masks = _masks()
    with pytest.raises(LiverctlError, match="reads back differently"):
        write_submission(tmp_path / "sub.csv", masks.items())
    assert list(tmp_path.iterdir()) == []


def test_the_self_check_reads_the_csv_once_and_its_sha256_is_of_those_bytes(tmp_path, monkeypatch):
    """The self-check parsed the written file, read it again to compare the strings, and `close` read the
    renamed file a third time for its sha256 (3.6 s of 50 on a 200 MB CSV): now one read does all three."""
    import hashlib

    reads = count_reads(monkeypatch, "sub.csv")
    summary = write_submission(tmp_path / "sub.csv", _masks().items())
    assert len(reads) == 1, reads
    assert summary.sha256 == hashlib.sha256((tmp_path / "sub.csv").read_bytes()).hexdigest()


def _write_with_rows_changed(tmp_path, monkeypatch, change):
    """write_submission with the data rows passed through `change` on their way to the file."""
    import csv

    real_writer = csv.writer

    class ChangingWriter:
        def __init__(self, fh, **kw):
            self._w = real_writer(fh, **kw)

        def writerow(self, row):
            self._w.writerow(row)

        def writerows(self, rows):
            self._w.writerows(change(list(rows)))

    monkeypatch.setattr(csv, "writer", ChangingWriter)
    return write_submission(tmp_path / "sub.csv", _masks().items())


def test_the_self_check_does_not_parse_the_checked_strings_again(tmp_path, monkeypatch):
    """add_case parses each string and compares it with its mask; reading back the identical string
    for the same row parsed it a second time (~35 s of 57 s of `submit` on a 200 MB CSV)."""
    parsed = []
    real = rle.parse_runs
    monkeypatch.setattr(rle, "parse_runs", lambda text, n=None: parsed.append(text) or real(text, n))
    writer = SubmissionWriter(tmp_path / "sub.csv")
    for case_id, mask in _masks().items():
        writer.add_case(case_id, mask)
    rows = len(parsed)
    assert rows == 5
    writer.close()
    assert len(parsed) == rows  # nothing parsed twice
    assert len(read_submission(tmp_path / "sub.csv", _shapes(_masks())).runs) == rows


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: rows[:-1], "1 of 2 slice id"),  # a row lost: found by the id checks, not the RLE
        (lambda rows: rows + rows[:1], "duplicate id"),
        (lambda rows: [(rows[0][0], "1 2 x")] + rows[1:], "not an integer: 'x'"),  # not the checked string
    ],
)
def test_the_self_check_still_validates_what_it_does_not_parse_again(tmp_path, monkeypatch, change, message):
    with pytest.raises(MalformedSubmission, match=message) as info:
        _write_with_rows_changed(tmp_path, monkeypatch, change)
    assert info.value.path == str(tmp_path / "sub.csv")  # not the temporary file, gone by now
    assert list(tmp_path.iterdir()) == []


def test_malformed_rows_are_all_reported_with_lines(tmp_path):
    shapes = {"1": (3, 2, 4)}
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "Id,Mask\n"  # line 1: bad header
        "1_0,1 2 x 3\n"  # 2: non-integer
        "1_1,1 2 5\n"  # 3: odd
        "1_2,5 3\n"  # 4: leaves the 6-pixel image
        "1_3,3 2 1 1\n"  # 5: unsorted
        "1_3,1 0\n"  # 6: duplicate
        "2_0,1 0\n"  # 7: unknown case
        "1_9,1 0\n"  # 8: slice out of range
        "1_1\n"  # 9: one column
    )
    with pytest.raises(MalformedSubmission) as info:
        read_submission(bad, shapes)
    text = [str(p) for p in info.value.problems]
    assert text[0].startswith("line 1: bad header 'Id,Mask'")
    assert any(t.startswith("line 2 (id '1_0'): not an integer") for t in text)
    assert any(t.startswith("line 3 (id '1_1'): odd number of values") for t in text)
    assert any(t.startswith("line 4 (id '1_2')") and "past the image" in t for t in text)
    assert any(t.startswith("line 5 (id '1_3'): runs out of order") for t in text)
    assert any(t.startswith("line 6 (id '1_3'): duplicate id (first on line 5)") for t in text)
    assert any(t.startswith("line 7 (id '2_0'): unknown id") for t in text)
    assert any(t.startswith("line 8 (id '1_9')") and "4 slices" in t for t in text)
    assert any(t.startswith("line 9 (id '1_1'): expected 2 columns") for t in text)
    assert len(text) == 9
    assert "9 problems" in str(info.value)


def test_missing_ids_are_grouped_per_case(tmp_path):
    shapes = {"a": (2, 2, 5), "b": (2, 2, 1)}
    path = tmp_path / "s.csv"
    path.write_text("id,rle\na_0,1 0\nb_0,1 4\n")
    with pytest.raises(MalformedSubmission) as info:
        read_submission(path, shapes)
    (problem,) = info.value.problems
    assert str(problem) == "file: case 'a': 4 of 5 slice ids missing (e.g. a_1, a_2, a_3)"


@pytest.mark.parametrize("rows, words", [
    ("a_0,1 0\nb_0,1 4\n", "malformed submission, 1 problem: file: case 'a': 1 of 2 slice ids missing (e.g. a_1)"),
    ("a_0,1 0\n", "malformed submission, 2 problems: file: case 'a': 1 of 2 slice ids missing (e.g. a_1) (and 1 more)"),
])
def test_a_count_of_problems_and_slice_ids_is_in_words_that_agree(tmp_path, rows, words):
    """It said "1 problem(s)"; a case of one slice said "1 of 1 slice id(s) missing"."""
    path = tmp_path / "s.csv"
    path.write_text("id,rle\n" + rows)
    with pytest.raises(MalformedSubmission) as info:
        read_submission(path, {"a": (2, 2, 2), "b": (2, 2, 1)})
    assert str(info.value) == f"{path}: {words}"
    assert [str(p) for p in info.value.problems][1:] in ([], ["file: case 'b': 1 of 1 slice id missing (e.g. b_0)"])


def test_an_id_past_a_one_slice_case_says_1_slice(tmp_path):
    """It said "case 'b' has 1 slices (0..0)"."""
    path = tmp_path / "s.csv"
    path.write_text("id,rle\na_0,1 0\na_1,1 0\nb_0,1 0\nb_1,1 0\n")
    with pytest.raises(MalformedSubmission) as info:
        read_submission(path, {"a": (2, 2, 2), "b": (2, 2, 1)})
    assert [str(p) for p in info.value.problems] == ["line 5 (id 'b_1'): unknown id: case 'b' has 1 slice (0..0)"]


def test_a_slice_number_of_thousands_of_digits_is_a_slice_past_the_case(tmp_path):
    """`7_` and 5000 digits was a ValueError through `evaluate` (int() refuses more than 4300 digits), found by
    scripts/fuzz_readers.py csv."""
    path = tmp_path / "s.csv"
    path.write_text(f"id,rle\n7_0,1 0\n7_{'9' * 5000},1 0\n7_{'9' * 19},1 0\n")
    with pytest.raises(MalformedSubmission) as info:
        read_submission(path, {"7": (2, 2, 1)})
    assert [str(p).split(" (id ")[0] for p in info.value.problems] == ["line 3", "line 4"]
    assert all(str(p).endswith("unknown id: case '7' has 1 slice (0..0)") for p in info.value.problems)
    assert split_slice_id("7_" + "9" * 18) == ("7", 10**18 - 1)


def test_any_two_column_header_accepted_when_not_required(tmp_path):
    shapes = {"a": (2, 2, 1)}
    path = tmp_path / "s.csv"
    path.write_text("ImageId,EncodedPixels\na_0,2 2\n")
    parsed = read_submission(path, shapes, header=None)
    assert parsed.volume("a")[..., 0].tolist() == [[False, True], [True, False]]
    headerless = tmp_path / "h.csv"
    headerless.write_text("a_0,2 2\n")
    with pytest.raises(MalformedSubmission, match="a data row, not a header"):
        read_submission(headerless, shapes, header=None)
    unknown_first = tmp_path / "u.csv"
    unknown_first.write_text("zz_0,1 0\na_0,1 0\n")
    with pytest.raises(MalformedSubmission) as info:
        read_submission(unknown_first, shapes, header=None)
    assert [str(p) for p in info.value.problems] == [
        "line 1: bad header 'zz_0,1 0': a data row, not a header; expected e.g. 'id,rle'",
        "line 1 (id 'zz_0'): unknown id: no such test case",
    ]
    long_first = tmp_path / "long.csv"  # a headerless CSV whose first row is a noisy slice's RLE
    long_first.write_text("a_0," + " ".join(["1 1"] * 50_000) + "\n")
    with pytest.raises(MalformedSubmission) as info:
        read_submission(long_first, shapes, header=None)
    first = str(info.value.problems[0])
    assert first.startswith("line 1: bad header 'a_0,1 1 1 1") and "… (200003 characters): a data row" in first
    assert len(first) < 200


def test_a_folder_given_as_the_sample_is_named_as_one(tmp_path):
    """`submit --sample data` said "data: sample submission not found" of a folder that is there."""
    from liverctl.infer.submission import check_sample_path

    with pytest.raises(LiverctlError, match="is a folder, expected the sample submission"):
        check_sample_path(tmp_path)
    with pytest.raises(LiverctlError, match="sample submission not found"):
        check_sample_path(tmp_path / "sample.csv")


def test_a_csv_that_is_not_utf8_is_one_line_naming_the_file(tmp_path):
    masks = _masks()
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("id,rle\n7_0,1 0 é\n".encode("latin-1"))
    for read in (lambda p: read_submission(p, _shapes(masks)), read_sample):
        with pytest.raises(LiverctlError) as info:
            read(latin)
        message = str(info.value)
        assert message.startswith(f"{latin}: ") and "is not UTF-8 text (byte 15 is 0xe9)" in message
        assert "\n" not in message and not isinstance(info.value, MalformedSubmission)


def test_binary_garbage_and_an_oversized_field_are_one_line(tmp_path):
    masks = _masks()
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(LiverctlError, match="not UTF-8 text"):
        read_submission(garbage, _shapes(masks))
    huge_field = tmp_path / "huge.csv"
    huge_field.write_text('id,rle\n7_0,"' + "1 " * 100_000 + "\n")  # an unclosed quote swallows the file
    with pytest.raises(MalformedSubmission) as info:
        read_submission(huge_field, _shapes(masks))
    assert str(info.value).startswith(f"{huge_field}: malformed submission") and "\n" not in str(info.value)


def test_a_noisy_full_size_mask_is_written_and_read_back(tmp_path):
    """One 512 x 512 slice of a noisy mask is ~1.2 MB of RLE, beyond the csv module's default field limit
    (128 KiB): the writer's self-check refused its own valid CSV, naming its temporary file."""
    mask = np.random.default_rng(0).random((512, 512, 2)) < 0.5
    out = tmp_path / "noisy.csv"
    summary = write_submission(out, [("c1", mask)])
    assert summary.rows == 2 and max(len(line) for line in out.read_text().splitlines()) > 131_072
    assert np.array_equal(read_submission(out, {"c1": mask.shape}).volume("c1"), mask)
    assert read_sample(out).ids == ["c1_0", "c1_1"]


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    masks = _masks()
    out = tmp_path / "s.csv"
    write_submission(out, masks.items())
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + out.read_bytes())
    assert read_submission(bom, _shapes(masks)).header == ("id", "rle")
    assert read_sample(bom).header == ("id", "rle")


def test_numbers_beyond_int64_or_that_wrap_it_name_the_file_and_row(tmp_path):
    masks = {"7": np.zeros((4, 4, 2), dtype=bool)}
    path = tmp_path / "s.csv"
    path.write_text(f"id,rle\n7_0,{'9' * 25} 1\n7_1,{2**62} {2**62}\n")
    with pytest.raises(MalformedSubmission) as info:
        read_submission(path, _shapes(masks))
    assert [str(p) for p in info.value.problems] == [
        "line 2 (id '7_0'): number too large: '9999999999999999999999999'",
        f"line 3 (id '7_1'): number out of range for an image of 16 pixels: '{2**62}'",
    ]
    assert str(info.value).startswith(f"{path}: malformed submission, 2 problems: line 2 (id '7_0')")


def test_a_full_disk_while_writing_the_csv_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from liverctl import files

    masks = _masks()
    out = tmp_path / "submission.csv"

    def no_space(fd):  # a full disk as fsync meets it (tests/test_files.py covers a failing write)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(LiverctlError) as info:
        write_submission(out, masks.items())
    assert str(info.value).startswith(f"{out}: no space left on ")
    assert str(info.value).endswith("while writing the submission CSV")
    assert list(tmp_path.iterdir()) == []


def test_a_file_of_millions_of_bad_rows_keeps_the_first_problems_and_counts_them_all(tmp_path):
    """Every duplicate or unknown row was kept as a problem, with every row of the file in a list beside
    them: a 100 MB file of `4_0,1 0` lines ran out of 6 GB (MemoryError); 1000 are kept now, all counted."""
    from liverctl.infer import submission

    MAX_PROBLEMS_KEPT = getattr(submission, "MAX_PROBLEMS_KEPT", 1000)  # noqa: N806 (the module's constant)
    path = tmp_path / "s.csv"
    path.write_text("id,rle\n" + "7_0,1 0\n" * (MAX_PROBLEMS_KEPT + 500))
    with pytest.raises(MalformedSubmission) as info:
        read_submission(path, {"7": (2, 2, 1)})
    assert len(info.value.problems) == MAX_PROBLEMS_KEPT and info.value.count == MAX_PROBLEMS_KEPT + 499
    assert str(info.value.problems[0]) == "line 3 (id '7_0'): duplicate id (first on line 2)"
    assert f"{MAX_PROBLEMS_KEPT + 499} problems" in str(info.value)


def test_reading_a_csv_of_short_rows_holds_little_beside_the_file(tmp_path, monkeypatch):
    """The reader held every row as a list of strings: ~30x the file in memory (a 100 MB CSV of short
    lines: over 6 GB). It reads as it parses now, and keeps each accepted id's runs only."""
    import tracemalloc

    from liverctl.infer import submission

    monkeypatch.setattr(submission, "_READ_CHUNK", 1 << 16, raising=False)  # what it holds of the file at once
    path = tmp_path / "s.csv"
    path.write_text("id,rle\n" + "".join(f"9_{i},1 0\n" for i in range(100_000)))  # 1.1 MB, unknown ids
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with pytest.raises(MalformedSubmission):
            read_submission(path, {"7": (2, 2, 1)})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size, (peak, size)


def test_a_row_longer_than_any_row_for_its_images_is_refused_where_it_starts(tmp_path):
    """One line of zero-length runs (`1 0 1 0 ...`, hundreds of MB) was read whole, then parsed into an
    array twice its size: ~11x the line in memory. Past the longest row its images can have, it stops."""
    from liverctl.infer import submission

    MIN_MAX_ROW_CHARS = getattr(submission, "MIN_MAX_ROW_CHARS", 1 << 20)  # noqa: N806 (the module's constant)
    path = tmp_path / "s.csv"
    path.write_text("id,rle\n7_0,1 0\n7_1," + "1 0 " * (MIN_MAX_ROW_CHARS // 4 + 10) + "1 0\n")
    with pytest.raises(LiverctlError) as info:
        read_submission(path, {"7": (2, 2, 2)})
    assert str(info.value) == (
        f"{path}: line 3: a row of more than {MIN_MAX_ROW_CHARS:,} characters, longer than any row of a "
        "submission for these images can be"
    )


_AWKWARD = (
    "\ufeffid,rle\r\n7_0,1 0\r\n\r\n7_1,\"2 1\"\r7_2,\"1\r\n0\"\n7_3,1 0 é\n\"7_4\",\"1 0 😀\"\r\n"
    "7_5,\"a,b\"\"c\"\n\n7_6,1 1"
)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 1 << 20])
def test_the_csv_is_read_in_chunks_as_the_csv_module_reads_it_whole(tmp_path, monkeypatch, chunk):
    """Line ends split between chunks (CR | LF), characters split between chunks, a byte-order mark, quoted
    fields over several lines: the rows are those of the whole text, each with its first line."""
    import csv
    import hashlib
    import io

    from liverctl.infer import submission

    monkeypatch.setattr(submission, "_READ_CHUNK", chunk)
    path = tmp_path / "s.csv"
    path.write_bytes(_AWKWARD.encode())
    reader = submission.CsvReader(path, "submission")
    rows = list(reader)
    whole = csv.reader(io.StringIO(_AWKWARD[1:], newline=""))
    assert [row for _, row in rows] == list(whole)
    assert [line for line, row in rows if row and row[0] in ("id", "7_2", "7_3", "7_6")] == [1, 5, 7, 11]
    assert reader.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    bad = _AWKWARD.encode().replace("é".encode(), b"\xe9")
    at = bad.index(b"\xe9")
    path.write_bytes(bad)
    with pytest.raises(LiverctlError, match=f"byte {at} is 0xe9"):
        list(submission.CsvReader(path, "submission"))


def test_fuzz_evaluate_and_sample_readers_with_the_scripts_mutations(tmp_path):
    """A submission or sample CSV is anyone's file: scripts/fuzz_readers.py mutate_csv (ids and RLE strings
    replaced by odd ones, a column more or fewer, rows doubled or moved, headers, line ends, bytes flipped,
    invalid UTF-8, control characters, truncated, random bytes, UTF-16 or Latin-1) read by evaluate_submission,
    read_sample with and without the store's slices, and now and then `liverctl evaluate`; a refusal names the
    file. A slice number of 5000 digits was a ValueError."""
    from collections import Counter

    from fuzz_script import load_fuzz_script, outcome

    fuzz = load_fuzz_script()
    base, labels, n_slices = fuzz.base_submission(tmp_path)
    text = base.read_text()
    path = tmp_path / "fuzz.csv"
    rng = np.random.default_rng(3)
    outcomes = Counter()
    for case in range(150):
        data, what = fuzz.mutate_csv(rng, text)
        path.write_bytes(data)
        for reader, read in fuzz.csv_readers(path, labels, n_slices):
            if case % 10 == 0 or reader != "evaluate":
                names = None if reader == "evaluate" else path  # the command's line is "error: PATH: ..."
                outcomes[reader, outcome(read, f"case {case}: {what}: {reader}", names)] += 1
    assert outcomes["evaluate_submission", "ok"] >= 20 and outcomes["evaluate_submission", "refused"] >= 50, outcomes
    assert outcomes["read_sample", "ok"] >= 20 and outcomes["evaluate", "refused"] >= 5, outcomes
