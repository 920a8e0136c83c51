import numpy as np
import pytest

from liverctl import rle


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
