"""`LiverStore`: the read API over the Zarr v3 store that `liverctl ingest` writes.

Schema (names, chunk keys, codecs, index columns, split and fold codes: `liverctl.data.schema`)::

    liver.zarr/
      attrs: format="liverctl-store/1", liver_labels, n_folds, fold_seed, sources, updated
      cases/<case_id>/image   float16 (X, Y, Z), HU as stored in the file, chunks (X, Y, 1)
      cases/<case_id>/label   uint8   (X, Y, Z), 1 = liver (training cases only), same chunks
      cases/<case_id> attrs:  complete=true, split, source, sha256, size, mtime, dtype, shape, affine,
                              spacing, stats, liver_voxels, liver_labels, fold, source_name, ...
      index/                  one row per slice of every complete case (see `SliceIndex`)

Reading one slice through zarr-python costs far more in per-chunk overhead than in decompression, so
`read_slice` / `read_stack` read the chunk file straight from a local store (`schema.slice_chunk_path`) and
decode it with the array's own codec (`schema.slice_chunk_codec`, numcodecs); anything that is not the plain layout written by ingest (another chunk
shape, codec or key encoding, a remote store) falls back to zarr-python. Both give the same values, and on
both a chunk file the array must have but lacks is an error naming it, never the fill value (zarr's reading
of a missing chunk): `schema.required_slices`, and `LiverStore.open` checks every case's files first.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.data.schema import (
    CASES_GROUP,
    IMAGE,
    INDEX_COLUMNS,
    INDEX_GROUP,
    LABEL,
    METADATA_FILE,
    SPLIT_CODES,
    STORE_FORMAT,
    TRAIN,
    is_group,
    read_attrs,
    read_metadata,
    required_slices,
    slice_chunk_codec,
    slice_chunk_path,
    written_chunk_bytes,
    written_chunk_crc32,
)
from liverctl.data.store_check import (
    NO_STORE,
    chunk_file_paths,
    damaged_chunk_message,
    empty_chunk_message,
    index_column_mismatch,
    missing_chunk_message,
    store_damage,
    undecodable_chunk,
    wrong_size_problem,
)
from liverctl.errors import LiverctlError
from liverctl.files import check_no_dangling_link
from liverctl.printable import quoted


@dataclass
class SliceIndex:
    """One row per slice of every complete case, in case-id order then z order.

    Columns (all numpy, length N): `case` int32 code into `case_ids`, `z` int32, `neighbors` int32
    (N, 3) = (z-1, z, z+1) clamped to the volume, `liver_pixels` int64, `split` uint8 (0 train, 1 test),
    `fold` int8 (-1 for test cases, -2 for train-only cases of extra sources).
    """

    case: np.ndarray
    z: np.ndarray
    neighbors: np.ndarray
    liver_pixels: np.ndarray
    split: np.ndarray
    fold: np.ndarray
    case_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.case.shape[0])

    def case_id(self, row: int) -> str:
        return self.case_ids[int(self.case[row])]

    def rows(self, split: str | None = None, folds: list[int] | None = None) -> np.ndarray:
        """Row numbers of the slices of `split` ("train"/"test"/None = all) in `folds` (None = all)."""
        keep = np.ones(len(self), dtype=bool)
        if split is not None:
            keep &= self.split == SPLIT_CODES[split]
        if folds is not None:
            keep &= np.isin(self.fold, np.asarray(folds, dtype=np.int8))
        return np.flatnonzero(keep)


class _ChunkReader:
    """Reads single z-slices of one (X, Y, Z) array with chunks (X, Y, 1).

    Fast path: the chunk file (`slice_chunk_path`) is read and decoded (`slice_chunk_codec`). `decode` is
    None when the array is not in that plain layout; reads then go through zarr-python. `required`: bool per
    slice, whether its chunk file must exist (`schema.required_slices`; None: no slice can be told), so that
    a missing file is an error on both paths rather than the fill value. A chunk file that cannot be decoded is
    an error naming it and its case (`case_dir`) on both paths (`store_check.damaged_chunk_message`), and on the
    fast path so is one of another size than ingest wrote (`schema.CHUNK_BYTES`), before it is decoded.
    """

    def __init__(self, array, required: np.ndarray | None = None, case_dir: Path | None = None):
        self.array = array
        self.case_dir = case_dir if case_dir is not None else Path(str(array.path)).parent  # for messages
        self.case_folder = _folder_id(self.case_dir)  # the case as read here: ingest replaces a case folder whole
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.fill_value = array.fill_value
        self.required = required
        self.folder: Path | None = None
        self.decode: Callable[[bytes, np.ndarray], None] | None = None
        self.written: np.ndarray | None = None  # each chunk file's size as written (fast path)
        self.verifiable = False  # whether the array records checksums: `ingest --verify` finds a damaged file
        codec = slice_chunk_codec(array)
        if codec is not None:
            self.folder = Path(str(array.store.root)) / array.path
            self.dtype = self.dtype.newbyteorder("<") if self.dtype.itemsize > 1 else self.dtype
            self.decode = codec[1]
            attrs = read_attrs(self.folder)  # {} where its zarr.json holds no table of them
            self.written = written_chunk_bytes(attrs, self.shape[2])
            self.verifiable = written_chunk_crc32(attrs, self.shape[2]) is not None

    def read_into(self, z: int, out: np.ndarray) -> None:
        """Write slice `z` into `out`, an (X, Y) C-contiguous array of the array's dtype.

        A chunk file that does not fit what this reader read of its case (size, presence) because an ingest has
        replaced the case meanwhile is said as such, not as a damaged store to rebuild."""
        try:
            self._read_into(z, out)
        except LiverctlError:
            if _folder_id(self.case_dir) != self.case_folder:
                from liverctl.data.store_writer import ingest_running

                when = ("is writing this store now; run this again once it has ended"
                        if ingest_running(self.case_dir.parent.parent) else "has built it anew; run this again")
                raise LiverctlError(f"case {quoted(self.case_dir.name)} was replaced while this read it: `liverctl ingest` "
                                    f"{when}", path=self.case_dir) from None
            raise

    def _read_into(self, z: int, out: np.ndarray) -> None:
        if not 0 <= z < self.shape[2]:
            raise IndexError(f"slice {z} out of range for {self.shape[2]} slices")
        if self.decode is None:
            self._check_chunk_files(z)
            try:
                out[...] = self.array[:, :, z]
            except Exception:
                found = undecodable_chunk(self.array, z)
                if found is None:  # no chunk fails on its own: not damage of a chunk file
                    raise
                raise LiverctlError(damaged_chunk_message(z, f"cannot be decoded ({found[1]})", self.case_dir,
                                                          ingest_finds_it=False), path=found[0]) from None
            return
        try:
            with open(slice_chunk_path(self.folder, z), "rb") as f:
                raw = f.read()
        except FileNotFoundError:  # the fill value where the array may leave all-zero slices out
            if self._is_required(z):
                raise LiverctlError(missing_chunk_message(z), path=slice_chunk_path(self.folder, z)) from None
            out.fill(self.fill_value)
            return
        if not raw:  # no codec writes 0 bytes: a copy cut short, not damaged content
            raise LiverctlError(empty_chunk_message(z), path=slice_chunk_path(self.folder, z))
        if self.written is not None and len(raw) != self.written[z]:  # it might decode, to other values
            problem = wrong_size_problem(len(raw), int(self.written[z]))
            raise LiverctlError(damaged_chunk_message(z, problem, self.case_dir, ingest_finds_it=True),
                                path=slice_chunk_path(self.folder, z))
        try:
            self.decode(raw, out)
        except Exception as exc:  # blosc, zstd, a wrong length: the file was damaged after ingest wrote it
            from liverctl.data.nifti import short_error

            # its size as written (or not recorded): a rerun of ingest cannot tell it without reading every chunk,
            # which --verify does where the array records checksums
            raise LiverctlError(
                damaged_chunk_message(z, f"cannot be decoded ({short_error(exc)})", self.case_dir, ingest_finds_it=False,
                                      verify_finds_it=self.verifiable),
                path=slice_chunk_path(self.folder, z),
            ) from None

    def _is_required(self, z: int) -> bool:
        return self.required is not None and bool(self.required[z])

    def _check_chunk_files(self, z: int) -> None:
        """zarr-python's path: the chunk files slice `z` lies in must exist where it is required (a local
        store; zarr-python reads a missing one as the fill value)."""
        if not self._is_required(z):
            return
        for path in chunk_file_paths(self.array, z) or ():
            if not path.is_file():
                raise LiverctlError(missing_chunk_message(z), path=path)

    def read(self, z: int) -> np.ndarray:
        out = np.empty(self.shape[:2], dtype=self.dtype)
        self.read_into(z, out)
        return out


def convert_float16(values: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """`values.astype(dtype)` for a float16 array, exact; through torch where it is loaded and
    single-threaded (as in DataLoader workers).

    numpy converts float16 without SIMD (~0.7 ms per 512 x 512 slice here, more than reading and
    decoding it); torch's copy does the same exact conversion about 10x faster. With several torch
    threads the copy is split across OpenMP threads whose spin-waiting slowed the reads around it on
    2 cores, so numpy is used there. torch is never imported for this.
    """
    torch = sys.modules.get("torch")
    if (
        torch is None
        or np.dtype(dtype) != np.float32
        or not values.flags.c_contiguous
        or torch.get_num_threads() != 1
    ):
        return values.astype(dtype)
    out = np.empty(values.shape, dtype=np.float32)
    torch.from_numpy(out).copy_(torch.from_numpy(values))
    return out


@contextlib.contextmanager
def _repairs_refused() -> Iterator[None]:
    """A UserWarning zarr-python gives while it reads metadata (zarr 3.4 reads a chunk shape of 0 as 1, and says so in
    700 characters) raised as an error instead: metadata zarr reads only by repairing it is damaged metadata (ingest
    never writes any), named in the store's one line, not a warning printed over it."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=UserWarning, module=r"zarr(\.|$)")
        yield


class LiverStore:
    """Read access to a liverctl store. Picklable: handles are reopened lazily in each process."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()  # a data.store of ~/x in a config or --set
        self._lock = threading.Lock()
        self._reset_handles()

    def _reset_handles(self) -> None:
        self._root = None
        self._index_attrs: dict[str, Any] | None = None
        self._meta: dict[str, dict[str, Any]] = {}
        self._readers: dict[tuple[str, str], _ChunkReader] = {}
        self._slice_index: SliceIndex | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._lock = threading.Lock()
        self._reset_handles()

    def __repr__(self) -> str:
        return f"LiverStore({str(self.path)!r})"

    # -- opening --------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> LiverStore:
        """Open the store at `path`; `LiverctlError` if it is missing, not a liverctl store, or has no index.

        An ingest writing the store meanwhile (it moves the index out before its first change and swaps a new one
        in at its end) is said as such, not as a damaged store or a traceback: an open that fails while one holds
        the store's lock is refused with "wait for it"; one that failed as it ended (the index read half before,
        half after its swap) is tried once more."""
        try:
            return cls._open_once(path)
        except Exception:
            _refuse_while_ingesting(path)
        try:  # it failed as an ingest ended: the index read half before, half after its swap; now the new one
            return cls._open_once(path)
        except Exception:
            _refuse_while_ingesting(path)
            raise

    @classmethod
    def _open_once(cls, path: str | Path) -> LiverStore:
        store = cls(path)
        p = store.path
        if not p.exists():
            check_no_dangling_link(p, option="--store")  # a disk not mounted: not a store to create
            raise LiverctlError(NO_STORE, path=p)
        if not is_group(p):
            raise LiverctlError("is not a Zarr v3 group (not a liverctl store)", path=p)
        fmt = read_attrs(p).get("format")
        if fmt != STORE_FORMAT:
            raise LiverctlError(
                f"is not a liverctl store (format {quoted(fmt, 60)}, expected {STORE_FORMAT!r})", path=p
            )
        if read_metadata(p / INDEX_GROUP) is None:
            raise LiverctlError(
                "store has no slice index (ingest did not finish); run `liverctl ingest` again", path=p
            )
        store.check()
        return store

    def check(self) -> None:
        """`LiverctlError` naming the first damaged file: a chunk file a case's array must have but lacks (an
        empty one is named when it is read), an array of another shape than its case, an index column that
        does not match the cases (`liverctl.data.store_check`). From the listing and metadata only, about 3 ms
        for 1,500 slices; `open` calls it."""
        index = self.slice_index()
        columns = {name: getattr(index, name) for name in INDEX_COLUMNS}
        if (line := store_damage(self.path, self._index_meta(), columns)) is not None:
            raise LiverctlError(line)

    @property
    def _group(self):
        """The store's zarr group, for the readers here only: a zarr array read directly takes a missing chunk
        file for zeros and names no damaged one (there is no public way to an unchecked array)."""
        if self._root is None:
            import zarr

            with self._lock:
                if self._root is None:
                    self._root = self._parsed("", lambda: zarr.open_group(str(self.path), mode="r"))
        return self._root

    def _node(self, key: str):
        """The zarr node at `key` below the store's group (KeyError where there is none)."""
        return self._parsed(key, lambda: self._group[key])

    def _parsed(self, key: str, open_node: Callable[[], Any]):
        """`open_node()`; a `zarr.json` there that zarr-python cannot parse (not JSON, nested too deep, a value of a
        type or range it does not take) is a line naming that file and what to do, not zarr's traceback. KeyError
        (no node there) passes through. A zarr.json that zarr reads only by repairing it (zarr 3.4 reads a chunk shape
        of 0 as 1, with a UserWarning of 700 characters) is refused alike: ingest never writes one."""
        try:
            with _repairs_refused():
                return open_node()
        except KeyError:
            raise
        except Exception as exc:  # noqa: BLE001 - zarr's parsers raise TypeError, ValueError, RecursionError, ...
            from liverctl.data.nifti import short_error

            raise LiverctlError(f"zarr cannot read this metadata ({short_error(exc, limit=200)}); the store is damaged: "
                                "run `liverctl ingest` again on the same data", path=self._refused_metadata(key)) from None

    def _refused_metadata(self, key: str) -> Path:
        """The first `zarr.json` from the store's root down to the node at `key` that zarr-python's parser refuses
        (opening a node reads its parents' too), else the node's own."""
        import json

        parts = [part for part in key.split("/") if part]
        try:
            from zarr.core.group import _build_metadata_v3  # zarr's parser of one zarr.json
        except ImportError:  # another zarr version: name the node's own
            return self.path.joinpath(*parts) / METADATA_FILE
        for n in range(len(parts) + 1):
            file = self.path.joinpath(*parts[:n]) / METADATA_FILE
            try:
                with _repairs_refused():
                    _build_metadata_v3(json.loads(file.read_text()))
            except Exception:  # noqa: BLE001 - whatever zarr's parser raises, this is the file
                return file
        return self.path.joinpath(*parts) / METADATA_FILE

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    def _index_meta(self) -> dict[str, Any]:
        if self._index_attrs is None:
            meta = read_metadata(self.path / INDEX_GROUP)
            if meta is None:
                raise LiverctlError("store has no slice index; run `liverctl ingest` again", path=self.path)
            attrs = meta.get("attributes", {})
            if (problem := _index_attrs_problem(attrs)) is not None:
                raise LiverctlError(f"the slice index's attributes are damaged ({problem}); run `liverctl ingest` "
                                    "again on the same data to rebuild the index",
                                    path=self.path / INDEX_GROUP / METADATA_FILE)
            self._index_attrs = attrs
        return self._index_attrs

    # -- cases ----------------------------------------------------------------------------------------

    def case_ids(self, split: str | None = None) -> list[str]:
        """Sorted ids of the complete cases, optionally only "train" or "test"."""
        if split not in (None, *SPLIT_CODES):
            raise ValueError(f"split must be 'train', 'test' or None, not {split!r}")
        attrs = self._index_meta()
        ids, splits = attrs.get("cases", []), attrs.get("splits", [])
        return sorted(c for c, s in zip(ids, splits, strict=True) if split is None or s == split)

    def meta(self, case_id: str) -> dict[str, Any]:
        """The case's attributes (see the module docstring)."""
        if case_id not in self._meta:
            case_dir = self.path / CASES_GROUP / case_id
            meta = read_metadata(case_dir)
            if meta is None and case_id in self._index_meta().get("cases", []):
                raise LiverctlError(
                    f"case {quoted(case_id)} is in the store's index but its zarr.json is missing or unreadable; the "
                    "store is damaged: run `liverctl ingest` again to rebuild that case",
                    path=case_dir,
                )
            if meta is None:
                raise LiverctlError(f"no case {quoted(case_id)} in the store", path=self.path)
            self._meta[case_id] = meta.get("attributes", {})
        return self._meta[case_id]

    def folds(self) -> dict[str, int]:
        """Fold of every training case (`TRAIN_ONLY_FOLD` for the train-only cases of extra sources)."""
        attrs = self._index_meta()
        return {
            c: int(f)
            for c, s, f in zip(
                attrs.get("cases", []), attrs.get("splits", []), attrs.get("folds", []), strict=True
            )
            if s == TRAIN
        }

    def case_sources(self) -> dict[str, str]:
        """Name of the source (`attrs["sources"]`) of every case; stores older than sources say "main"."""
        attrs = self._index_meta()
        ids = attrs.get("cases", [])
        return dict(zip(ids, attrs.get("sources") or ["main"] * len(ids), strict=True))

    def _reader(self, case_id: str, name: str) -> _ChunkReader:
        key = (case_id, name)
        reader = self._readers.get(key)
        if reader is None:
            try:
                array = self._node(f"{CASES_GROUP}/{case_id}/{name}")
            except KeyError:
                raise LiverctlError(f"no {name} for case {quoted(case_id)} in the store", path=self.path) from None
            reader = _ChunkReader(
                array, required_slices(read_attrs(self.path / CASES_GROUP / case_id / name), self.meta(case_id), name,
                                       int(array.shape[2])),
                self.path / CASES_GROUP / case_id,
            )
            self._readers[key] = reader
        return reader

    # -- slices ---------------------------------------------------------------------------------------

    def read_slice(self, case_id: str, z: int) -> np.ndarray:
        """Slice `z` of the image. Shape: float16 (X, Y)."""
        return self._reader(case_id, IMAGE).read(int(z))

    def read_label_slice(self, case_id: str, z: int, out: np.ndarray | None = None) -> np.ndarray:
        """Slice `z` of the label (1 = liver). Shape: uint8 (X, Y); written into `out` if given (a
        C-contiguous uint8 (X, Y) array, e.g. a view into a batch)."""
        if self.meta(case_id).get("split") != TRAIN:
            raise LiverctlError(f"case {quoted(case_id)} is a test case and has no label", path=self.path)
        reader = self._reader(case_id, LABEL)
        if out is None:
            return reader.read(int(z))
        reader.read_into(int(z), out)
        return out

    def read_label_volume(self, case_id: str) -> np.ndarray:
        """Every slice of the label, read through the checked reader (a missing or undecodable chunk file is an
        error, never zeros). Shape: uint8 (X, Y, Z), each slice contiguous (a view of (Z, X, Y))."""
        if self.meta(case_id).get("split") != TRAIN:
            raise LiverctlError(f"case {quoted(case_id)} is a test case and has no label", path=self.path)
        return self._read_volume(self._reader(case_id, LABEL))

    def read_image_volume(self, case_id: str) -> np.ndarray:
        """Every slice of the image, read as `read_label_volume` reads the label. Shape: float16 (X, Y, Z)."""
        return self._read_volume(self._reader(case_id, IMAGE))

    @staticmethod
    def _read_volume(reader: _ChunkReader) -> np.ndarray:
        slices = np.empty((reader.shape[2], *reader.shape[:2]), dtype=reader.dtype)
        for z in range(reader.shape[2]):
            reader.read_into(z, slices[z])
        return np.moveaxis(slices, 0, -1)

    def read_stack(
        self,
        case_id: str,
        z: int,
        context: int = 1,
        dtype: np.dtype | type = np.float32,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Slices z-context .. z+context (clamped at the volume's ends), in HU.

        Shape: (2 * context + 1, X, Y), float32 unless `dtype` says otherwise (float16 is the stored
        type: no conversion at all); channel `context` is slice z itself. `out`: a C-contiguous float16
        array of that shape to read into (no allocation, e.g. a view into a worker's batch).
        """
        reader = self._reader(case_id, IMAGE)
        depth = reader.shape[2]
        z = int(z)
        if not 0 <= z < depth:
            raise IndexError(f"slice {z} out of range for case {quoted(case_id)} with {depth} slices")
        shape = (2 * context + 1, *reader.shape[:2])
        if out is not None and (out.shape != shape or out.dtype != reader.dtype or not out.flags.c_contiguous):
            raise ValueError(f"out must be C-contiguous {reader.dtype} {shape}, got {out.dtype} {out.shape}")
        stack = out if out is not None else np.empty(shape, dtype=reader.dtype)
        for i, zz in enumerate(range(z - context, z + context + 1)):
            reader.read_into(min(max(zz, 0), depth - 1), stack[i])
        if out is not None or stack.dtype == np.dtype(dtype):
            return stack
        return convert_float16(stack, dtype) if stack.dtype == np.float16 else stack.astype(dtype)

    # -- index ----------------------------------------------------------------------------------------

    def slice_index(self) -> SliceIndex:
        """The precomputed slice index (cached per process)."""
        if self._slice_index is None:
            self._node(INDEX_GROUP)
            attrs = self._index_meta()
            columns = {name: self._index_column(name, dtype) for name, dtype in INDEX_COLUMNS.items()}
            self._slice_index = SliceIndex(**columns, case_ids=list(attrs.get("cases", [])))
        return self._slice_index

    def _index_column(self, name: str, dtype: np.dtype) -> np.ndarray:
        """One index column; a missing or undecodable one is a line naming it (ingest rebuilds the index)."""
        rebuild = "the store is damaged: run `liverctl ingest` again on the same data to rebuild the index"
        try:
            array = self._node(f"{INDEX_GROUP}/{name}")
        except KeyError:
            raise LiverctlError(f"slice index column {name!r} is missing; {rebuild}",
                                path=self.path / INDEX_GROUP / name) from None
        slices = self._index_meta().get("slices")
        if (isinstance(slices, list) and all(type(n) is int for n in slices)
                and int(array.shape[0]) != sum(slices)):  # read before this is compared: not what it only claims
            raise LiverctlError(index_column_mismatch(self.path, name, f"{array.shape[0]} rows", sum(slices)))
        try:
            return np.asarray(array[:], dtype=dtype)
        except Exception as exc:
            from liverctl.data.nifti import short_error

            try:
                found = undecodable_chunk(array)
            except Exception:  # noqa: BLE001 - metadata zarr took but cannot read by (a chunk shape of 0)
                found = None
            if found is None:  # no chunk file to blame: the column's own zarr.json
                raise LiverctlError(f"slice index column {name!r} cannot be read ({short_error(exc, limit=200)}); {rebuild}",
                                    path=self.path / INDEX_GROUP / name / METADATA_FILE) from None
            raise LiverctlError(f"slice index column {name!r} cannot be decoded ({found[1]}); {rebuild}",
                                path=found[0]) from None


def _folder_id(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, None where it is missing: a case folder ingest moved in anew has another."""
    try:
        info = folder.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _refuse_while_ingesting(path: str | Path) -> None:
    """`LiverctlError` "wait for it" where an ingest is writing the store at `path` now (holds its lock)."""
    from liverctl.data.store_writer import ingest_running

    path = Path(path).expanduser()
    if ingest_running(path):
        raise LiverctlError("`liverctl ingest` is writing this store now; wait for it to end, then run this again",
                            path=path) from None


def _index_attrs_problem(attrs: Any) -> str | None:
    """What is wrong with the index group's attributes as the readers here take them (`cases`, and one split, fold
    and (where recorded) source per case: `slice_index.index_columns`), in words; None where nothing is."""
    if not isinstance(attrs, dict):
        return f"a {type(attrs).__name__}, not a table"
    cases = attrs.get("cases", [])
    if not isinstance(cases, list) or not all(isinstance(c, str) for c in cases):
        return "'cases' is not a list of case ids"
    for key, kind, optional in (("splits", str, False), ("folds", int, False), ("sources", str, True)):
        values = attrs.get(key)
        if optional and not values:
            continue
        if not (isinstance(values, list) and len(values) == len(cases)
                and all(isinstance(v, kind) and not isinstance(v, bool) for v in values)):
            return f"'{key}' is not one {kind.__name__} per case"
    return None


def store_bytes(path: str | Path) -> int:
    """Total size of the files under `path` (what `du -sb` would count for the files)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total
