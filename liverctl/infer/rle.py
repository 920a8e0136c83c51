"""Run-length encoding of 2D masks in the competition's format (DESIGN.md, Submission).

A slice `dataobj[..., z]` of shape (X, Y) is flattened in column-major (Fortran) order, so pixel
(x, y) has 1-indexed position `1 + x + X * y`. Foreground runs are written as `start length` pairs,
starts ascending; an empty mask is written as `1 0` (or a sample submission's own empty token).

Everything here is vectorised over whole volumes: one `np.diff` over a padded (Z, X*Y) array finds the
runs of every slice at once, and `join_numbers` writes all their numbers as text, digit by digit, into one
buffer (BENCHMARKS.md, "Submission CSV writing").

Parsing (`parse_runs`) reads a well-formed string (ASCII digits and single spaces) with one regular
expression and numpy's C number parser: about 50 MB/s with every check, against 5 MB/s token by token.
Anything else, and any well-formed string with a number out of range or an odd count, goes through
the token-by-token reference path (`_parse_pairs`), which accepts or refuses it and names the first
problem exactly as before.
"""

from __future__ import annotations

import re

import numpy as np

from liverctl.printable import quoted

EMPTY_RLE = "1 0"
# Largest start or length accepted without an image size: far beyond any slice, yet small enough that
# start + length can never wrap int64 (which would let a run slip past the range checks).
MAX_RUN_VALUE = 2**40
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_DIGITS = re.compile(r"-?[0-9]+")
# The fast path's input: ASCII digits in tokens of 1..13 (any number <= MAX_RUN_VALUE fits, none can
# overflow int64), joined by single spaces, nothing before or after. Possessive, so a near miss fails
# in one pass instead of backtracking.
_FAST_DIGITS = 13
_WELL_FORMED = re.compile(rf"(?:[0-9]{{1,{_FAST_DIGITS}}}+ )*+[0-9]{{1,{_FAST_DIGITS}}}+")


class RLEFormatError(ValueError):
    """A run-length string that cannot be decoded for a given image size (message says why)."""


# A transposed copy of a C-ordered (X, Y, Z) mask into slice-major order, in one assignment, reads one
# byte per cache line (stride Y * Z); in tiles of 64 x 16 x 64 (X, Y, Z) what a tile reads and writes stays
# in cache (a 512 x 512 x 521 mask: 8.5-11 s in one assignment, 0.65-1.0 s in tiles, in turns on a loaded
# 2-core machine).
_TILE_XZ, _TILE_Y = 64, 16
# 10**k for k = 0..18: a number's digit count is how many of these it reaches.
_POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)
# `join_numbers` writes about this many numbers at a time (whole groups): a noise volume's 6.3M numbers at
# once spent more time in memory than in arithmetic (1.3-3.8 s, against 0.6-0.9 s in chunks).
_JOIN_CHUNK = 1 << 18


def _volume_run_values(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The runs of every slice as one flat array of numbers in the order they are written.

    Shape: volume (X, Y, Z) (or (X, Y) for one slice), any dtype, non-zero = foreground -> (values
    (2K,) int64: start, length, start, length, ... slice after slice; counts (Z,) runs per slice).
    """
    volume = np.asarray(volume)
    if volume.ndim == 2:
        volume = volume[..., None]
    if volume.ndim != 3:
        raise ValueError(f"expected a (X, Y) or (X, Y, Z) mask, got shape {volume.shape}")
    x, y, z = volume.shape
    n = x * y
    # One row per slice, zero-padded at both ends; row z holds slice z in column-major order, which is
    # the C order of the (Z, Y, X) transpose.
    padded = np.zeros((z, n + 2), dtype=bool)
    inner = padded[:, 1:-1].reshape(z, y, x)
    source = volume.transpose(2, 1, 0)
    if np.shares_memory(inner, padded):
        for z0 in range(0, z, _TILE_XZ):
            for y0 in range(0, y, _TILE_Y):
                for x0 in range(0, x, _TILE_XZ):
                    tile = np.s_[z0:z0 + _TILE_XZ, y0:y0 + _TILE_Y, x0:x0 + _TILE_XZ]
                    inner[tile] = source[tile]
    else:  # reshape had to copy (never for this layout, but never write into a copy silently)
        padded[:, 1:-1] = source.reshape(z, n)
    # Every change between neighbours is a run start or a run end (one past it), alternating within a
    # row; the padding makes each row start and end with zero, so rows never mix.
    change = np.flatnonzero(padded[:, 1:] != padded[:, :-1])
    rows, values = np.divmod(change, n + 1)
    values[1::2] -= values[0::2]  # end -> length
    values[0::2] += 1  # 0-indexed position -> 1-indexed start
    return values, np.bincount(rows[0::2], minlength=z)


def volume_runs(volume: np.ndarray) -> list[np.ndarray]:
    """Runs of every slice of a volume.

    Shape: volume (X, Y, Z) (or (X, Y) for one slice), any dtype, non-zero = foreground -> Z arrays of
    shape (K_z, 2) int64, each row a 1-indexed (start, length) pair, starts ascending.
    """
    values, counts = _volume_run_values(volume)
    return np.split(values.reshape(-1, 2), np.cumsum(counts)[:-1])


def join_numbers(values: np.ndarray, counts: np.ndarray, empty: str = EMPTY_RLE) -> list[str]:
    """Non-negative integers -> one string per group, its numbers in decimal joined by single spaces
    (`empty` for a group of none): what `" ".join(map(str, ...))` gives, written digit by digit into byte
    buffers with numpy (the 6.3M numbers of a 512 x 512 x 48 noise mask: 2.8-3.5 s joined, 0.6-0.9 s here,
    in turns on a loaded 2-core machine).

    Shape: values (N,) int, counts (G,) numbers per group, summing to N -> G strings.
    """
    values = np.asarray(values, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if len(values) != int(counts.sum()):
        raise ValueError(f"{len(values)} numbers for groups of {int(counts.sum())}")
    if len(values) and values.min() < 0:
        raise ValueError("negative number in a run-length string")
    # Whole groups at a time, about _JOIN_CHUNK numbers each (a larger group alone).
    bounds = np.cumsum(counts)
    cuts = np.searchsorted(bounds, np.arange(_JOIN_CHUNK, len(values), _JOIN_CHUNK), side="left") + 1
    edges = np.unique(np.concatenate([[0], cuts, [len(counts)]])).tolist()
    texts: list[str] = []
    for g0, g1 in zip(edges[:-1], edges[1:], strict=True):
        n0, n1 = (int(bounds[g0 - 1]) if g0 else 0), int(bounds[g1 - 1])
        texts += _join_groups(values[n0:n1], counts[g0:g1], empty)
    return texts


def _join_groups(values: np.ndarray, counts: np.ndarray, empty: str) -> list[str]:
    """`join_numbers` of one chunk of groups (values non-negative int64)."""
    if not len(values):
        return [empty] * len(counts)
    widths = np.maximum(np.searchsorted(_POWERS_OF_TEN, values, side="right"), 1)
    ends = np.cumsum(widths + 1)  # one past each number's trailing space
    buffer = np.full(int(ends[-1]), ord(" "), dtype=np.uint8)
    narrow = values.max() < 2**32  # 32-bit division is the faster
    for width in range(1, int(widths.max()) + 1):  # the numbers of each width together, last digit first
        these = np.flatnonzero(widths == width)
        digit_at = ends[these] - 2
        rest = values[these].astype(np.uint32 if narrow else np.int64)
        for k in range(width):
            rest, digit = np.divmod(rest, 10)
            buffer[digit_at - k] = digit + ord("0")
    text = buffer.tobytes().decode("ascii")
    # Each non-empty group runs from its first number's first digit to its last number's last digit.
    first = np.cumsum(counts) - counts
    full = counts > 0
    begin, end = np.zeros_like(counts), np.zeros_like(counts)
    begin[full] = (ends - widths - 1)[first[full]]
    end[full] = ends[first[full] + counts[full] - 1] - 1
    return [text[i:j] if c else empty for i, j, c in zip(begin.tolist(), end.tolist(), counts.tolist(), strict=True)]


def encode_volume(volume: np.ndarray, empty: str = EMPTY_RLE) -> list[str]:
    """One RLE string per slice. Shape: volume (X, Y, Z) -> Z strings (slice z = `volume[..., z]`)."""
    values, counts = _volume_run_values(volume)
    return join_numbers(values, 2 * counts, empty)


def encode(mask: np.ndarray, empty: str = EMPTY_RLE) -> str:
    """RLE string of one slice. Shape: mask (X, Y)."""
    if np.ndim(mask) != 2:
        raise ValueError(f"expected a 2D (X, Y) mask, got shape {np.shape(mask)}")
    return encode_volume(mask, empty)[0]


def parse_runs(text: str, n_pixels: int | None = None) -> np.ndarray:
    """Parse and check `"s1 l1 s2 l2 ..."` -> (K, 2) int64 runs, zero-length runs dropped.

    Raises `RLEFormatError` naming the first problem: a non-integer token, a number beyond the image
    (or beyond `MAX_RUN_VALUE` without one), an odd number of values,
    a start below 1, a negative length, runs out of order or overlapping, or (when `n_pixels` is given)
    a run that leaves the image. An empty string and `1 0` both mean an empty mask.
    """
    runs = _fast_pairs(text, n_pixels)
    if runs is None:
        tokens = text.split()
        if not tokens:
            return np.zeros((0, 2), dtype=np.int64)
        runs = _parse_pairs(tokens, n_pixels)
    if not len(runs):  # nothing to check (most rows of a submission are `1 0`)
        return runs
    starts, lengths = runs[:, 0], runs[:, 1]
    if (starts < 1).any():
        i = int(np.argmax(starts < 1))
        raise RLEFormatError(f"run {i + 1} starts at {starts[i]}: starts are 1-indexed")
    if (lengths < 0).any():
        i = int(np.argmax(lengths < 0))
        raise RLEFormatError(f"run {i + 1} has negative length {lengths[i]}")
    runs = runs[lengths > 0]
    if n_pixels is not None and len(runs):
        ends = runs[:, 0] + runs[:, 1] - 1
        if (ends > n_pixels).any():
            i = int(np.argmax(ends > n_pixels))
            raise RLEFormatError(
                f"run {runs[i, 0]} {runs[i, 1]} ends at pixel {ends[i]}, past the image's {n_pixels} pixels"
            )
    _check_order(runs)
    return runs


def max_text_length(n_pixels: int) -> int:
    """The most characters a run-length string of an image of `n_pixels` needs: at most one run per two
    pixels (runs are apart), each `start length ` of at most as many digits as `n_pixels` has."""
    return (n_pixels // 2 + 1) * (2 * len(str(max(n_pixels, 1))) + 2)


def _fast_pairs(text: str, n_pixels: int | None) -> np.ndarray | None:
    """What `_parse_pairs(text.split(), n_pixels)` gives a well-formed string that passes its checks
    (for `1 0`, no pairs: its one zero-length run would be dropped anyway), else None.

    None means "ask the reference path": it may still accept the string (other whitespace, `-0`,
    a token of 14 to 19 digits with leading zeros) or it names what is wrong with it. The fast
    path never answers differently from it (tests/infer/test_rle.py compares the two).
    """
    if text == EMPTY_RLE and (n_pixels is None or n_pixels >= 1):
        return np.zeros((0, 2), dtype=np.int64)
    if not _WELL_FORMED.fullmatch(text):
        return None
    # Safe on this input: only digits and single spaces, no token long enough to overflow.
    values = np.fromstring(text, dtype=np.int64, sep=" ")
    limit = MAX_RUN_VALUE if n_pixels is None else n_pixels
    if len(values) % 2 or values.max() > limit:
        return None
    return values.reshape(-1, 2)


def _parse_pairs(tokens: list[str], n_pixels: int | None) -> np.ndarray:
    """Tokens -> (K, 2) int64 pairs: integers, none beyond the image (or `MAX_RUN_VALUE`), an even count."""
    bad = next((t for t in tokens if not _INTEGER.fullmatch(t)), None)
    if bad is not None:
        what = "number too large" if _DIGITS.fullmatch(bad) else "not an integer"
        raise RLEFormatError(f"{what}: {quoted(bad, 40, sized=True)}")
    limit = MAX_RUN_VALUE if n_pixels is None else n_pixels
    values = [int(t) for t in tokens]
    too_big = next((v for v in values if abs(v) > limit), None)
    if too_big is not None:  # checked before any sum, so start + length cannot wrap int64
        where = "" if n_pixels is None else f" for an image of {n_pixels} pixels"
        raise RLEFormatError(f"number out of range{where}: {quoted(str(too_big), 40, sized=True)}")
    if len(values) % 2:
        raise RLEFormatError(f"odd number of values ({len(values)}): expected start/length pairs")
    return np.array(values, dtype=np.int64).reshape(-1, 2)


def _check_order(runs: np.ndarray) -> None:
    """Starts ascending and no run reaching into the next. Shape: runs (K, 2), lengths > 0."""
    if len(runs) < 2:
        return
    starts = runs[:, 0]
    prev_ends = starts[:-1] + runs[:-1, 1] - 1
    unsorted = starts[1:] < starts[:-1]
    if unsorted.any():
        i = int(np.argmax(unsorted))
        raise RLEFormatError(f"runs out of order: start {starts[i + 1]} after start {starts[i]}")
    overlap = starts[1:] <= prev_ends
    if overlap.any():
        i = int(np.argmax(overlap))
        raise RLEFormatError(
            f"overlapping runs: {starts[i]} {runs[i, 1]} reaches pixel {prev_ends[i]}, "
            f"next run starts at {starts[i + 1]}"
        )


def runs_to_positions(runs: np.ndarray) -> np.ndarray:
    """(K, 2) 1-indexed runs -> the 0-indexed flat (column-major) positions they cover, ascending."""
    runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    lengths = runs[:, 1]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(runs[:, 0] - 1, lengths) + (np.arange(total, dtype=np.int64) - offsets)


def decode_runs(runs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, 2) runs -> bool mask of `shape` (X, Y), column-major like the encoder."""
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    flat[runs_to_positions(runs)] = True
    return flat.reshape(shape, order="F")


def decode(text: str, shape: tuple[int, int]) -> np.ndarray:
    """RLE string -> bool mask of `shape` (X, Y); raises `RLEFormatError` on a malformed string."""
    return decode_runs(parse_runs(text, shape[0] * shape[1]), shape)


def decode_volume_runs(runs_per_slice: list[np.ndarray], shape: tuple[int, int, int]) -> np.ndarray:
    """Runs of every slice -> bool (X, Y, Z) volume in C order, slice z = `volume[..., z]`.

    Writes only the foreground voxels, straight into the C-ordered result, so comparing it with a
    C-ordered mask needs no transposed copy.
    """
    x, y, z = shape
    if len(runs_per_slice) != z:
        raise ValueError(f"{len(runs_per_slice)} slices of runs for a volume of {z} slices")
    out = np.zeros(x * y * z, dtype=bool)
    for k, runs in enumerate(runs_per_slice):
        pos = runs_to_positions(runs)  # column-major within the slice: pos = x + X * y
        out[(pos % x * y + pos // x) * z + k] = True
    return out.reshape(shape)
