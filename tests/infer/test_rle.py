import numpy as np
import pytest

from liverctl.infer import rle
from liverctl.printable import quoted


def _reference_encode(mask: np.ndarray) -> str:
    """Slow, obvious encoder to compare against: walk the column-major pixels one by one."""
    flat = mask.ravel(order="F")
    pairs, start = [], None
    for i, v in enumerate(flat, start=1):
        if v and start is None:
            start = i
        elif not v and start is not None:
            pairs += [start, i - start]
            start = None
    if start is not None:
        pairs += [start, len(flat) + 1 - start]
    return " ".join(map(str, pairs)) if pairs else "1 0"


def test_known_3x2_mask_matches_hand_computed_string():
    # (X=3, Y=2); column-major order walks x first: column y=0 is 1,1,0 and column y=1 is 0,1,1.
    mask = np.array([[1, 0], [1, 1], [0, 1]], dtype=bool)
    assert rle.encode(mask) == "1 2 5 2"
    assert np.array_equal(rle.decode("1 2 5 2", (3, 2)), mask)


def test_column_major_not_row_major():
    mask = np.zeros((4, 3), dtype=bool)
    mask[0, 1] = True  # row-major position 2, column-major position 1 + 0 + 4*1 = 5
    assert rle.encode(mask) == "5 1"


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("empty", lambda m: m),
        ("full", lambda m: np.ones_like(m)),
        ("first pixel", lambda m: _set(m, (0, 0))),
        ("last pixel", lambda m: _set(m, (-1, -1))),
        ("single pixel", lambda m: _set(m, (3, 2))),
        ("last column", lambda m: _set(m, (slice(None), -1))),
    ],
)
def test_edge_cases_round_trip(name, build):
    mask = build(np.zeros((7, 5), dtype=bool))
    text = rle.encode(mask)
    assert text == _reference_encode(mask), name
    assert np.array_equal(rle.decode(text, mask.shape), mask), name


def _set(mask, index):
    mask[index] = True
    return mask


def test_empty_and_full_strings():
    assert rle.encode(np.zeros((4, 4), bool)) == "1 0"
    assert rle.encode(np.zeros((4, 4), bool), empty="") == ""
    assert rle.encode(np.ones((4, 4), bool)) == "1 16"


def test_random_volumes_round_trip_and_match_reference():
    rng = np.random.default_rng(0)
    for density in (0.02, 0.5, 0.97):
        vol = rng.random((13, 11, 6)) < density
        texts = rle.encode_volume(vol)
        assert len(texts) == 6
        for z, text in enumerate(texts):
            assert text == _reference_encode(vol[..., z])
            assert np.array_equal(rle.decode(text, vol.shape[:2]), vol[..., z])


def _classic_encode(mask: np.ndarray, empty: str = "1 0") -> str:
    """The encoder as it was (the classic Kaggle one, one slice at a time): the reference for the
    vectorised one, which must write the very same bytes."""
    flat = np.concatenate([[False], mask.ravel(order="F") != 0, [False]])
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    change[1::2] -= change[0::2]
    return " ".join(map(str, change.tolist())) if len(change) else empty


def _volumes():
    """(name, (X, Y, Z) mask) in several shapes, memory layouts and dtypes."""
    rng = np.random.default_rng(3)
    for shape in [(1, 1, 1), (1, 7, 2), (7, 1, 3), (13, 11, 6), (70, 40, 65), (33, 97, 33)]:
        for density in (0.03, 0.5, 0.97):
            vol = rng.random(shape) < density
            yield f"{shape} {density}", vol
            yield f"{shape} {density} fortran", np.asfortranarray(vol)
            yield f"{shape} {density} slice-major view", np.moveaxis(np.ascontiguousarray(np.moveaxis(vol, -1, 0)), 0, -1)
            yield f"{shape} {density} uint8", vol.astype(np.uint8) * rng.integers(1, 3, size=shape, dtype=np.uint8)
    big = rng.random((66, 80, 9)) < 0.5
    yield "strided, reversed view", big[::2, ::-1, 1::2]
    yield "float32", (rng.random((20, 30, 4)) < 0.3).astype(np.float32)
    edges = np.zeros((9, 8, 5), dtype=bool)
    edges[0, 0, 1] = edges[-1, -1, 2] = True
    edges[0, 0, 3] = edges[-1, -1, 3] = True
    edges[..., 4] = True
    yield "empty, first pixel, last pixel, both, full", edges
    yield "all empty", np.zeros((5, 4, 3), dtype=bool)
    yield "all full", np.ones((5, 4, 3), dtype=bool)
    # Starts and lengths on every side of the powers of ten (digit counts 1 to 6).
    digits = np.zeros((1000, 1001, 1), dtype=bool).reshape(-1, order="F")
    for start in (9, 10, 99, 100, 999, 1000, 9999, 10000, 99999, 100000, 999999):
        digits[start - 1:start - 1 + (start % 7 + 1)] = True
    digits[200000:200010] = digits[300000:300099] = digits[400000:400100] = True
    yield "powers of ten", digits.reshape((1000, 1001, 1), order="F")


@pytest.mark.parametrize("empty", ["1 0", ""])
def test_vectorised_encoder_writes_the_classic_encoders_bytes(empty):
    for name, vol in _volumes():
        texts = rle.encode_volume(vol, empty=empty)
        expected = [_classic_encode(vol[..., z], empty) for z in range(vol.shape[2])]
        assert texts == expected, name
    small = np.random.default_rng(4).random((6, 5, 3)) < 0.5
    assert rle.encode_volume(small) == [_reference_encode(small[..., z]) for z in range(3)]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 18])
def test_join_numbers_is_str_join_of_each_group(monkeypatch, chunk):
    monkeypatch.setattr(rle, "_JOIN_CHUNK", chunk)  # groups cut into chunks of about this many numbers
    rng = np.random.default_rng(5)
    values = np.concatenate([[0, 1, 9, 10, 99, 100, 2**40, 10**18 - 1, 10**18],
                             10 ** rng.integers(0, 13, 300) - rng.integers(0, 2, 300)])
    counts = np.array([0, 3, 0, 0, 1, 200, 5, len(values) - 209, 0])
    texts = rle.join_numbers(values, counts, empty="E")
    bounds = np.cumsum(counts)
    assert texts == [" ".join(map(str, values[b - c:b].tolist())) if c else "E" for b, c in zip(bounds, counts, strict=True)]
    assert rle.join_numbers([], [0, 0]) == ["1 0", "1 0"] and rle.join_numbers([], []) == []
    vol = rng.random((9, 7, 5)) < 0.5
    assert rle.encode_volume(vol) == [_classic_encode(vol[..., z]) for z in range(5)]


def test_runs_to_positions_matches_flatnonzero():
    rng = np.random.default_rng(1)
    mask = rng.random((9, 8)) < 0.4
    runs = rle.volume_runs(mask)[0]
    assert np.array_equal(rle.runs_to_positions(runs), np.flatnonzero(mask.ravel(order="F")))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1 2 x 3", "not an integer: 'x'"),
        ("1.5 2", "not an integer"),
        ("1 2 5", "odd number of values (3)"),
        ("0 2", "starts are 1-indexed"),
        ("3 -1", "negative length"),
        ("5 2 1 2", "out of order"),
        ("1 3 3 2", "overlapping"),
        ("5 3", "past the image's 6 pixels"),
    ],
)
def test_malformed_strings_are_named(text, fragment):
    with pytest.raises(rle.RLEFormatError) as info:
        rle.decode(text, (3, 2))
    assert fragment in str(info.value)


def test_empty_string_and_zero_length_runs_mean_empty():
    assert not rle.decode("", (3, 2)).any()
    assert not rle.decode("1 0", (3, 2)).any()


def test_decode_volume_runs_inverts_volume_runs():
    rng = np.random.default_rng(2)
    vol = rng.random((7, 5, 4)) < 0.4
    decoded = rle.decode_volume_runs(rle.volume_runs(vol), vol.shape)
    assert decoded.flags.c_contiguous
    assert np.array_equal(decoded, vol)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("9" * 30 + " 1", "number too large: '999"),  # beyond int64: OverflowError before
        ("1 " + "9" * 5000, "(5000 characters)"),  # beyond Python's int-from-text limit, cut short in the message
        (f"{2**62} {2**62}", "number out of range for an image of 100 pixels"),  # start + length wraps int64
        (f"1 {2**63 - 1}", "number out of range"),
        (f"-{2**63 + 5} 1", "number out of range"),
        ("１ 2", "not an integer: '１'"),  # full-width digit: int() would take it
        ("1_0 2", "not an integer: '1_0'"),
        ("\x00\xff 1", "not an integer"),
    ],
)
def test_huge_wrapping_and_odd_numbers_are_named(text, fragment):
    with pytest.raises(rle.RLEFormatError) as info:
        rle.parse_runs(text, 100)
    assert fragment in str(info.value) and len(str(info.value)) < 200


def test_wrapping_runs_cannot_slip_past_the_range_check_without_an_image_size():
    # Without a size the bound is MAX_RUN_VALUE, so start + length stays far inside int64.
    with pytest.raises(rle.RLEFormatError, match="number out of range"):
        rle.parse_runs(f"{2**62} {2**62} 5 1")
    assert rle.parse_runs(f"1 {rle.MAX_RUN_VALUE}").tolist() == [[1, rle.MAX_RUN_VALUE]]


def _fuzz_texts(rng: np.random.Generator, n: int):
    """Random RLE-ish strings: random bytes decoded leniently, huge and negative numbers, nesting, spaces."""
    pieces = ["1", "0", "-1", "3", str(2**31), str(2**63), str(2**64 + 1), "9" * 25, "9" * 5000, "[", "]",
              "{", "}", "\x00", "\t", "\n", " ", "１", "1e5", "0x10", "nan", "+4", "é", "\ud800"]
    for _ in range(n):
        kind = rng.integers(4)
        if kind == 0:
            yield rng.bytes(int(rng.integers(0, 60))).decode("latin-1")
        elif kind == 1:
            yield " ".join(rng.choice(pieces, size=int(rng.integers(0, 12))))
        elif kind == 2:
            depth = int(rng.integers(1, 3000))
            yield "[" * depth + "1 2" + "]" * depth
        else:
            yield " ".join(str(int(v)) for v in rng.integers(-(2**62), 2**62, size=int(rng.integers(0, 10)) * 2))


def test_fuzz_parse_runs_gives_runs_or_one_format_error():
    rng = np.random.default_rng(1234)
    parsed = refused = 0
    for text in _fuzz_texts(rng, 3000):
        for n_pixels in (None, 64):
            try:
                runs = rle.parse_runs(text, n_pixels)
            except rle.RLEFormatError as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 300
                refused += 1
                continue
            parsed += 1
            assert runs.dtype == np.int64 and runs.shape[1] == 2
            if n_pixels is not None and len(runs):
                assert (runs[:, 0] >= 1).all() and (runs.sum(axis=1) - 1 <= n_pixels).all()
                rle.decode_runs(runs, (8, 8))  # what parses also decodes
    assert parsed > 100 and refused > 1000  # both branches were exercised


def _valid_runs_text(rng: np.random.Generator, n_pixels: int) -> str:
    """A random well-formed RLE string for an image of `n_pixels`: sorted, disjoint runs inside it."""
    k = min(2 * int(rng.integers(1, 40)), (n_pixels + 1) // 2 * 2)
    cuts = 1 + np.sort(rng.choice(n_pixels + 1, size=k, replace=False))
    starts, ends = cuts[0::2], cuts[1::2]  # run covers start..end-1, so runs never touch or overlap
    return " ".join(f"{s} {e - s}" for s, e in zip(starts.tolist(), ends.tolist(), strict=True))


def _corrupt(rng: np.random.Generator, text: str) -> str:
    """One random change that a careless or hostile writer could make (some keep the string valid)."""
    tokens = text.split(" ")
    i = int(rng.integers(len(tokens)))
    edits = [
        lambda t: t[:i] + t[i + 1:],  # odd count
        lambda t: t[:i] + [str(rng.choice([0, -1, -7, -100, -(2**40 + 1), 2**40, 2**40 + 1, 2**62, 2**63, 2**64 + 3]))] + t[i + 1:],
        lambda t: t[:i] + ["9" * int(rng.integers(12, 30))] + t[i + 1:],  # 13+ digits: fast path's edge
        lambda t: t[:i] + ["0" * int(rng.integers(1, 20)) + t[i]] + t[i + 1:],  # leading zeros
        lambda t: t[:i] + [str(rng.choice(["+", "-", "-", "１", "x", "1.", "_", "\x00", "é"])) + t[i]] + t[i + 1:],
        lambda t: t[:i] + [t[i] + str(rng.choice(["", "5", "0"]))] + t[i + 1:],  # bigger: past image/overlap
        lambda t: t[2:4] + t[:2] + t[4:] if len(t) >= 4 else t[::-1],  # out of order
        lambda t: t[:i] + [""] + t[i:],  # double space, or a leading/trailing space
    ]
    tokens = edits[int(rng.integers(len(edits)))](tokens)
    sep = str(rng.choice([" ", " ", " ", " ", "\t", "\n", "  ", "\x0b", "\u3000"]))
    return sep.join(tokens)


def _parse_or_message(text: str, n_pixels: int | None):
    try:
        return rle.parse_runs(text, n_pixels).tolist()
    except rle.RLEFormatError as exc:
        return f"error: {exc}"


def test_fast_parse_agrees_with_the_reference_parse_on_valid_and_corrupted_strings(monkeypatch):
    """The fast path (well-formed strings) must give exactly what the token-by-token reference gives:
    the same runs, or the same error message, for random valid strings and one-edit corruptions."""
    rng = np.random.default_rng(7)
    cases = []
    for _ in range(1500):
        n_pixels = int(rng.choice([6, 64, 512 * 512, 10**13, rle.MAX_RUN_VALUE]))
        text = _valid_runs_text(rng, n_pixels)
        cases.append((text, n_pixels))
        cases.append((_corrupt(rng, text), int(rng.choice([n_pixels, 6]))))
        cases.append((_corrupt(rng, _corrupt(rng, text)), None))
    cases += [("1 0", None), ("1 0", 1), ("1 0", 0), ("", 5), (" ", 5), ("0 0", 5), ("1 1", 1), ("2 1", 1)]

    real_fast = rle._fast_pairs
    fast_hits = []
    monkeypatch.setattr(rle, "_fast_pairs", lambda t, n: fast_hits.append(t) or real_fast(t, n))
    fast = [_parse_or_message(t, n) for t, n in cases]
    monkeypatch.setattr(rle, "_fast_pairs", lambda t, n: None)  # the reference path alone
    reference = [_parse_or_message(t, n) for t, n in cases]

    for (text, n_pixels), got, want in zip(cases, fast, reference, strict=True):
        assert got == want, (quoted(text, 200), n_pixels)
    accepted_fast = sum(real_fast(t, n) is not None for t, n in cases)
    errors = sum(isinstance(r, str) for r in reference)
    # both paths exercised, and parse_runs did go through the fast path
    assert accepted_fast > 1500 and errors > 1500 and len(fast_hits) > 4000
