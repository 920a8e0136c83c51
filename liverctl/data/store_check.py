"""Whether a store's files are all there, from the file listing and the metadata alone (no chunk is decoded):
each case's arrays against its attributes (shape, the chunk files `schema.required_slices` says must exist,
no empty chunk file; for ingest, each chunk file's size against the one it was written with,
`schema.CHUNK_BYTES`) and the slice index against the case attributes it is built from.

Zarr reads a missing chunk file as the fill value, so a store copied incompletely (an upload that dropped
files, an interrupted rsync) would read as empty masks and images of 0 HU, and an index column whose chunk
is gone as a column of zeros. `LiverStore.open` refuses such a store in one line naming the first damaged
file, and ingest builds a damaged case again from its source (`case_damage`).

A chunk file that is there but damaged is named by the reader (`damaged_chunk_message`): one of another size
than ingest wrote (cut short, overwritten with text or with another slice's chunk), from the length read, before
decoding; one that fails to decode. Ingest finds the first kind from the stat it makes anyway. Blosc keeps no
checksum: bit flips inside the compressed data, the size unchanged, may decode to wrong values unnoticed (a
check on every read would cost ~0.2 ms of loader CPU per 512 x 512 sample, ~20% of reading it: not done,
docs/store.md). Ingest records each chunk file's checksum (`schema.CHUNK_CRC32`) instead, and a verification
asked for (`verify_case`: `liverctl ingest --verify`, `liverctl verify`) reads every chunk file against it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.data.schema import (
    CASES_GROUP,
    IMAGE,
    INDEX_GROUP,
    LABEL,
    TRAIN,
    chunk_checksum,
    chunk_key,
    is_plain_slice_metadata,
    read_metadata,
    required_slices,
    slice_chunk_path,
    written_chunk_bytes,
    written_chunk_crc32,
)
from liverctl.plural import agree, plural
from liverctl.printable import quoted

NO_STORE = "no store here; create one with `liverctl ingest DATA --store PATH`"  # a store path with nothing there
_REBUILD = "run `liverctl ingest` again on the same data to rebuild that case"
_VERIFY = "run `liverctl ingest` again on the same data with --verify to rebuild that case"


@dataclass(frozen=True)
class Damage:
    """The first damaged file of a case or of the index, and what is wrong with it (one line, no path)."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def missing_chunk_message(z: int, count: str = "") -> str:
    """What a missing chunk file of slice `z` means where the array says it was written (the text after
    the file's path; also the store's reader's, at the slice). `count`: e.g. "3 of 24 missing"."""
    return (
        f"chunk file of slice {z} is missing{f' ({count})' if count else ''}; zarr would read it as zeros; the "
        f"store is damaged, e.g. copied incompletely: {_REBUILD}"
    )


def empty_chunk_message(z: int, count: str = "") -> str:
    """What an empty (0-byte) chunk file of slice `z` means: no codec writes one (as `missing_chunk_message`)."""
    return (
        f"chunk file of slice {z} is empty{f' ({count})' if count else ''}; the store is damaged, e.g. a copy cut "
        f"short: {_REBUILD}"
    )


def damaged_chunk_message(z: int, problem: str, case_dir: Path, *, ingest_finds_it: bool,
                          verify_finds_it: bool = False) -> str:
    """What a chunk file of slice `z` of the case at `case_dir` that is there but damaged means (the text after the
    file's path); `problem` e.g. "cannot be decoded (...)". `ingest_finds_it`: whether a rerun of ingest sees the
    damage (a size other than `schema.CHUNK_BYTES` says) and builds the case again; else `verify_finds_it`: whether
    a rerun with --verify does (the array records checksums, `schema.CHUNK_CRC32`); else the case's folder must be
    deleted first."""
    fix = (_REBUILD if ingest_finds_it else _VERIFY if verify_finds_it
           else f"delete {case_dir} and run `liverctl ingest` again to rebuild that case")
    return f"chunk file of slice {z} of case {quoted(case_dir.name)} {problem}; the store is damaged: {fix}"


def wrong_size_problem(size: int, written: int) -> str:
    """`damaged_chunk_message`'s problem for a chunk file of `size` bytes that ingest wrote with `written`."""
    return f"has {size} bytes where ingest wrote {written} (cut short or overwritten)"


def other_bytes_problem(count: str = "") -> str:
    """`damaged_chunk_message`'s problem for a chunk file whose bytes are not those ingest wrote, its size the same
    (`verify_case`). `count`: e.g. "3 of 24 chunk files so"."""
    return (f"holds other bytes than ingest wrote, of the same size (its checksum differs: bits flipped, or another "
            f"chunk of that size copied over){f' ({count})' if count else ''}")


@dataclass(frozen=True)
class Verification:
    """What `verify_case` found: the case's first damaged file (None: none), whether every chunk file was compared
    with a checksum (False: an array written before ingest recorded them, `schema.CHUNK_CRC32`; only whether its
    files are there and of their sizes was checked), and the bytes read."""

    damage: Damage | None
    checked: bool
    bytes_read: int = 0


def verify_case(case_dir: Path, attrs: dict[str, Any],
                arrays: dict[str, dict[str, Any] | None] | None = None) -> Verification:
    """`case_damage` (every chunk file there, of the size it was written with), then every chunk file read and its
    checksum compared with the one ingest recorded (`schema.CHUNK_CRC32`): a bit flipped inside the compressed data,
    or another slice's chunk of the same size copied over, keeps the size and may decode to wrong values. Reads the
    whole case (on demand only: `liverctl ingest --verify`, `liverctl verify`; the loader's reads compare sizes).
    `arrays`: as `case_damage`'s."""
    arrays = {} if arrays is None else arrays
    if (damage := case_damage(case_dir, attrs, arrays=arrays)) is not None:
        return Verification(damage, True)
    checked, read = True, 0
    for name, meta in arrays.items():
        attributes = (meta or {}).get("attributes")
        sums = None
        if isinstance(meta, dict) and is_plain_slice_metadata(meta):
            sums = written_chunk_crc32(attributes if isinstance(attributes, dict) else {}, int(meta["shape"][2]))
        if sums is None:
            checked = False
            continue
        array_dir = case_dir / name
        differ = []
        for z, recorded in enumerate(sums):
            try:
                data = slice_chunk_path(array_dir, z).read_bytes()
            except FileNotFoundError:  # case_damage said whether it may be missing
                continue
            read += len(data)
            if chunk_checksum(data) != recorded:
                differ.append(z)
        if differ:
            z = differ[0]
            count = f"{len(differ)} of {len(sums)} chunk files so" if len(differ) > 1 else ""
            return Verification(Damage(slice_chunk_path(array_dir, z), damaged_chunk_message(
                z, other_bytes_problem(count), case_dir, ingest_finds_it=False, verify_finds_it=True)), True, read)
    return Verification(None, checked, read)


def unverifiable_note(store: Path, case_ids: list[str]) -> str:
    """The line for cases stored before ingest recorded chunk checksums (`schema.CHUNK_CRC32`): a verification
    checked only that their chunk files are there and of their sizes."""
    n = len(case_ids)
    shown = ", ".join(case_ids[:6]) + (", ..." if n > 6 else "")
    return (
        f"{store}: {plural(n, 'case')} ({shown}) {agree(n, 'was', 'were')} stored before ingest recorded chunk "
        f"checksums: only {agree(n, 'its', 'their')} chunk files' presence and sizes could be verified, not their "
        f"bytes; to have checksums recorded, delete {agree(n, 'that case folder', 'those case folders')} under "
        f"{store / CASES_GROUP} (or ingest into a new --store) and ingest again"
    )


@dataclass
class StoreVerification:
    """What `verify_store` found: damaged cases (id -> first damaged file), cases stored without checksums, cases
    read, bytes read, and a problem of the store beyond its cases (the slice index), one line or None."""

    damaged: dict[str, Damage]
    unverifiable: list[str]
    cases: int
    bytes_read: int
    problem: str | None = None


def verify_store(store: Path, on_case: Callable[[str, int], None] | None = None) -> StoreVerification:
    """Every complete case of the store read against its recorded checksums (`verify_case`), all of them (not
    only up to the first damaged one), then the slice index against the cases (`LiverStore.open`'s check) where
    no case is damaged. Reads only; no source needed (`liverctl verify`; `ingest --verify` rebuilds from the
    source). `LiverctlError` for a path that is not a liverctl store. `on_case(case_id, total)` after each case
    (`total`: the case folders there are to read).

    An ingest writing the store (it moves cases and the index in and out) is waited for, not verified: refused
    at the start while one holds the store's lock, and at the end where one holds it or has replaced a case or
    the index meanwhile (`_generation`), rather than an answer about a store that is no longer the one read."""
    from liverctl.data.schema import STORE_FORMAT, read_attrs
    from liverctl.data.store_writer import ingest_running
    from liverctl.errors import LiverctlError

    if not Path(store).exists():  # `liverctl verify` run from another folder than the store/ one
        raise LiverctlError(NO_STORE, path=store)
    if read_attrs(store).get("format") != STORE_FORMAT:
        raise LiverctlError("not a liverctl store (no zarr.json with format "
                            f"{STORE_FORMAT!r}); make one with `liverctl ingest`", path=store)
    if ingest_running(store):
        raise LiverctlError("`liverctl ingest` is writing this store now; wait for it to end, then verify it",
                            path=store)
    before = _generation(store)
    result = _verify_cases(store, on_case)
    if ingest_running(store) or _generation(store) != before:
        raise LiverctlError("`liverctl ingest` changed this store while verify read it; once it has ended, run "
                            "`liverctl verify` again", path=store)
    return result


def _generation(store: Path) -> list[tuple[str, int]]:
    """Each case folder's and the index folder's inode: ingest moves a case or index in whole (a rename), so a
    change here says an ingest replaced what a reader may have read; attributes updated in place (folds) are not."""
    found = []
    for folder in (*(store / CASES_GROUP).glob("*"), store / INDEX_GROUP):
        try:
            found.append((folder.name, folder.stat().st_ino))
        except OSError:
            found.append((folder.name, -1))
    return sorted(found)


def _verify_cases(store: Path, on_case: Callable[[str, int], None] | None) -> StoreVerification:
    """`verify_store`'s reading: every complete case, then the index where no case is damaged."""
    from liverctl.data.schema import read_attrs
    from liverctl.errors import LiverctlError

    cases_dir = store / CASES_GROUP
    result = StoreVerification({}, [], 0, 0)
    case_dirs = sorted(p for p in cases_dir.iterdir() if p.is_dir()) if cases_dir.is_dir() else []
    for case_dir in case_dirs:
        attrs = read_attrs(case_dir)
        if attrs.get("complete") is not True:  # an ingest's leftover, not part of the store (ingest removes it)
            continue
        verification = verify_case(case_dir, attrs)
        result.cases += 1
        result.bytes_read += verification.bytes_read
        if verification.damage is not None:
            result.damaged[case_dir.name] = verification.damage
        elif not verification.checked:
            result.unverifiable.append(case_dir.name)
        if on_case is not None:
            on_case(case_dir.name, len(case_dirs))
    if not result.damaged:
        from liverctl.data.store import LiverStore

        try:
            LiverStore.open(store)
        except LiverctlError as exc:
            result.problem = str(exc)
    return result


def case_damage(case_dir: Path, attrs: dict[str, Any], *, sizes: bool = True,
                arrays: dict[str, dict[str, Any] | None] | None = None) -> Damage | None:
    """The first problem of a complete case's files (`attrs`: its attributes), or None.

    Per array (the image; the label of a training case): its `zarr.json` is readable and its shape the
    case's; where it is in ingest's plain layout, every slice `required_slices` names has its chunk file and,
    with `sizes`, no chunk file is empty (no codec writes 0 bytes) or of another size than it was written with
    (`schema.CHUNK_BYTES`, where the array records it). One listing per array, and with `sizes` a stat per file:
    5 us a file here, most of the check's time (`LiverStore.open` leaves it to the reader, which names an empty
    or resized file when it reads it; ingest stats).
    `arrays`: each array's `zarr.json` as read here (name -> dict or None) is put in it, for callers that
    want the metadata too (ingest) without reading it again.
    """
    names = [IMAGE, LABEL] if attrs.get("split") == TRAIN else [IMAGE]
    shape = attrs.get("shape")
    for name in names:
        array_dir = case_dir / name
        meta = read_metadata(array_dir)
        if arrays is not None:
            arrays[name] = meta
        if meta is None or meta.get("node_type") != "array":
            return Damage(array_dir / "zarr.json", f"missing or unreadable; the store is damaged: {_REBUILD}")
        array_shape = meta.get("shape")
        if not isinstance(shape, list) or array_shape != shape:
            return Damage(
                array_dir / "zarr.json",
                f"array shape {quoted(array_shape)} differs from the case's shape {quoted(shape)}; the store is damaged: "
                f"{_REBUILD}",
            )
        if not is_plain_slice_metadata(meta):  # rewritten by another tool: the reader's zarr-python path checks it
            continue
        if (damage := _chunk_files_damage(array_dir, meta, attrs, name, sizes)) is not None:
            return damage
    per_slice = attrs.get("liver_pixels_per_slice")  # the index's liver_pixels column is built from it
    if per_slice is not None and not (isinstance(per_slice, list) and len(shape) == 3 and len(per_slice) == shape[2]
                                      and all(type(n) is int and 0 <= n < 2**63 for n in per_slice)):
        return Damage(case_dir / "zarr.json", "its liver_pixels_per_slice is not one count per slice; the store is "
                                              f"damaged: {_REBUILD}")
    return None


def _chunk_files_damage(
    array_dir: Path, meta: dict[str, Any], attrs: dict[str, Any], name: str, sizes: bool
) -> Damage | None:
    depth = int(meta["shape"][2])
    attributes = meta.get("attributes")
    required = required_slices(attributes if isinstance(attributes, dict) else {}, attrs, name, depth)
    folder = slice_chunk_path(array_dir, 0).parent
    present: dict[int, int] = {}  # slice -> file size (-1: not asked)
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.isdigit() and int(entry.name) < depth:
                    present[int(entry.name)] = entry.stat().st_size if sizes else -1
    except FileNotFoundError:  # no slice written (an old array of zeros), or the folder lost
        pass
    empty = sorted(z for z, size in present.items() if size == 0)
    if empty:
        return Damage(folder / str(empty[0]), empty_chunk_message(empty[0], f"{len(empty)} of {depth} are"))
    written = written_chunk_bytes(attributes if isinstance(attributes, dict) else {}, depth) if sizes else None
    if written is not None:
        resized = sorted(z for z, size in present.items() if size != written[z])
        if resized:
            z = resized[0]
            count = f" ({len(resized)} of {depth} chunk files so)" if len(resized) > 1 else ""
            return Damage(folder / str(z), damaged_chunk_message(
                z, wrong_size_problem(present[z], int(written[z])) + count, array_dir.parent, ingest_finds_it=True))
    if required is None:
        return None
    missing = [z for z in np.flatnonzero(required).tolist() if z not in present]
    if not missing:
        return None
    return Damage(
        array_dir / chunk_key((0, 0, missing[0])),
        missing_chunk_message(missing[0], f"{len(missing)} of {depth} missing"),
    )


def index_column_mismatch(store: Path, name: str, rows: str, slices: int) -> str:
    """The line for an index column of other rows than the slices of the cases it indexes (`rows`: "N rows" or
    "missing"): `store_damage`'s, and LiverStore's before it reads a column claiming other rows."""
    return str(Damage(
        store / INDEX_GROUP / name,
        f"slice index column {name!r} ({rows}) does not match the cases it indexes ({slices} slices); the store is "
        "damaged: run `liverctl ingest` again on the same data to rebuild the index",
    ))


def _chunk_grid(array, z: int | None = None) -> list[tuple[tuple[int, ...], Path]] | None:
    """(chunk coordinates, chunk file) of a zarr-python (X, Y, Z) array in a local folder, in chunk order: those
    slice `z` lies in, or with `z` None all of them; None for an array in another kind of store."""
    import itertools

    from zarr.storage import LocalStore

    if not isinstance(array.store, LocalStore):
        return None
    folder = Path(str(array.store.root)) / array.path
    chunks = tuple(array.shards or array.chunks)
    grid = [range(-(-int(n) // int(c))) for n, c in zip(array.shape, chunks, strict=True)]
    if z is not None:
        grid[2] = range(z // chunks[2], z // chunks[2] + 1)
    return [(coords, folder / array.metadata.encode_chunk_key(coords)) for coords in itertools.product(*grid)]


def chunk_file_paths(array, z: int | None = None) -> list[Path] | None:
    """The chunk files of a zarr-python (X, Y, Z) array in a local folder, in chunk order: those slice `z` lies in,
    or with `z` None all of them; None for an array in another kind of store (no files to look at)."""
    grid = _chunk_grid(array, z)
    return None if grid is None else [path for _, path in grid]


def undecodable_chunk(array, z: int | None = None) -> tuple[Path, str] | None:
    """The first chunk file of a zarr-python array in a local folder (of those slice `z` lies in, or all) that
    zarr-python cannot decode, and why (`short_error`), or None. Each chunk is read on its own: for naming the file
    after a read of several failed."""
    from liverctl.data.nifti import short_error

    chunks = tuple(array.shards or array.chunks)
    for coords, path in _chunk_grid(array, z) or ():
        try:
            array[tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, chunks, strict=True))]
        except Exception as exc:  # noqa: BLE001 - blosc's RuntimeError, zstd's, a wrong length: all damage
            return path, short_error(exc)
    return None


def every_chunk_damage(array) -> Damage | None:
    """The first chunk file of a zarr-python array in a local folder that is missing or empty (0 bytes), or
    None: for an array whose writer wrote every chunk, zeros included (`schema.EVERY_CHUNK`), where zarr would
    read a missing file as the fill value. The problem text says what is wrong, not what to do (the caller
    knows that). A stat per chunk file."""
    paths = chunk_file_paths(array)
    if paths is None:
        return None
    missing: list[Path] = []
    empty: list[Path] = []
    for path in paths:
        try:
            if path.stat().st_size == 0:
                empty.append(path)
        except FileNotFoundError:
            missing.append(path)
    if missing:
        return Damage(missing[0], f"chunk file is missing ({len(missing)} of {len(paths)}); zarr would read it as zeros")
    if empty:
        return Damage(empty[0], f"chunk file is empty ({len(empty)} of {len(paths)}); no codec writes one: a copy cut short")
    return None


def store_damage(store: Path, index_attrs: dict[str, Any], index_columns: dict[str, np.ndarray]) -> str | None:
    """One line naming the store's first damaged file (and how many cases are damaged), or None.

    Every case the index lists (`case_damage`, without sizes), then the index's columns (`index_columns`, as read) against
    those the cases' attributes give (`liverctl.data.slice_index.index_columns`).
    """
    from liverctl.data.slice_index import index_columns as expected_columns

    cases: dict[str, dict[str, Any]] = {}
    damaged: list[tuple[str, Damage]] = []
    for case_id in index_attrs.get("cases", []):
        case_dir = store / CASES_GROUP / case_id
        meta = read_metadata(case_dir)
        attrs = (meta or {}).get("attributes")
        if not isinstance(attrs, dict):
            damaged.append((case_id, Damage(case_dir / "zarr.json", f"missing or unreadable; the store is "
                                            f"damaged: {_REBUILD}")))
            continue
        cases[case_id] = attrs
        if (damage := case_damage(case_dir, attrs, sizes=False)) is not None:
            damaged.append((case_id, damage))
    if damaged:
        line = str(damaged[0][1])
        if len(damaged) > 1:
            others = ", ".join(case_id for case_id, _ in damaged[1:6]) + (", ..." if len(damaged) > 6 else "")
            line += f" (also damaged: case {others}; {len(damaged)} cases in all)"
        return line
    try:
        expected, _ = expected_columns(cases)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # attributes without a shape or split; a count
        # beyond int64
        return f"{store / CASES_GROUP}: case attributes the index is built from are damaged ({quoted(exc)}); {_REBUILD}"
    for name, values in expected.items():
        stored = index_columns.get(name)
        if stored is None or stored.shape != values.shape or not np.array_equal(stored, values):
            return index_column_mismatch(store, name, "missing" if stored is None else f"{stored.shape[0]} rows",
                                         values.shape[0])
    return None
