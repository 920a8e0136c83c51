"""The store's schema, in one place: node and array names, chunk keys, codecs, index columns, split and fold
codes, and reading and writing node attributes. Ingest (the writer) and `LiverStore` (the reader) both go
through these names and functions, as zarr-python goes through its chunk key encodings.

Layout (ARCHITECTURE.md, section Store; docs/store.md)::

    liver.zarr/                 group, attrs: format, liver_labels, n_folds, fold_seed, sources, updated
      cases/<case_id>/image     float16 (X, Y, Z), chunks (X, Y, 1), key `c/0/0/<z>`, blosc lz4-9 shuffle;
                                attrs every_chunk_written=true: a chunk file for every slice, zeros included;
                                chunk_bytes: each slice's chunk file size as written; chunk_crc32: its
                                checksum (`chunk_checksum`), read only by a verification (`ingest --verify`)
      cases/<case_id>/label     uint8 (X, Y, Z), same chunks and attrs (training cases only)
      index/<column>            one row per slice (`INDEX_COLUMNS`)

A missing chunk file reads as the fill value in Zarr (zeros), so an incomplete copy of a store would read
as plausible data: an empty mask where there is liver, an image of 0 HU. Ingest therefore writes every chunk
and says so in the array's attributes (`EVERY_CHUNK`), and a missing one is damage (`required_slices`).
Arrays from before that omit all-zero slices; there only a label slice the case's `liver_pixels_per_slice`
counts liver in must have its file.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.errors import LiverctlError

STORE_FORMAT = "liverctl-store/1"
CASES_GROUP = "cases"
INDEX_GROUP = "index"
IMAGE = "image"  # array names inside a case group
LABEL = "label"
IMAGE_DTYPE = np.dtype(np.float16)
LABEL_DTYPE = np.dtype(np.uint8)
DIMENSION_NAMES = ("x", "y", "z")
METADATA_FILE = "zarr.json"  # Zarr v3: every node's metadata and attributes

# Case attrs `split` and the index's `split` column.
TRAIN, TEST = "train", "test"
SPLIT_CODES = {TRAIN: 0, TEST: 1}
# Fold codes besides 0 .. n_folds-1 (case attrs `fold`, the index's `fold` column and attrs `folds`):
TEST_FOLD = -1  # test cases (case attrs: null)
TRAIN_ONLY_FOLD = -2  # training cases of an extra source: trained on, never validated on

INDEX_COLUMNS: dict[str, np.dtype] = {
    "case": np.dtype(np.int32),  # code into the index attrs `cases`
    "z": np.dtype(np.int32),
    "neighbors": np.dtype(np.int32),  # (N, 3): z-1, z, z+1 clamped to the volume
    "liver_pixels": np.dtype(np.int64),
    "split": np.dtype(np.uint8),  # SPLIT_CODES
    "fold": np.dtype(np.int8),  # 0 .. n_folds-1, TEST_FOLD, TRAIN_ONLY_FOLD
}
INDEX_ZSTD_LEVEL = 3
MAX_FOLDS = int(np.iinfo(INDEX_COLUMNS["fold"]).max) + 1  # fold codes 0 .. MAX_FOLDS-1 fit the index's column
MIN_FOLDS = 2  # one fold would hold every training case out, leaving none to train on
DEFAULT_FOLDS = 5  # a new store's fold count when ingest is given none (a store keeps its own)

# Array attribute: a chunk file was written for every slice, all-zero ones included (module docstring).
EVERY_CHUNK = "every_chunk_written"
# Array attribute: each slice's chunk file size in bytes as ingest wrote it (list, one per slice; absent from
# arrays written before it). A file of another size is damaged (cut short, overwritten), found from a stat or
# the length read: blosc keeps no size check of its own that ingest could see without reading every file.
CHUNK_BYTES = "chunk_bytes"
# Array attribute: each slice's chunk file checksum as ingest wrote it (`chunk_checksum`, list, one per slice;
# absent from arrays written before it). Read only by an explicit verification (`store_check.verify_case`:
# `liverctl ingest --verify`, `liverctl verify`), which reads every chunk file: a bit flipped inside the compressed
# data keeps the size, and blosc keeps no checksum, so it may decode to wrong values unnoticed. The loader's reads
# do not check it (~20% of a sample's read time, docs/store.md).
CHUNK_CRC32 = "chunk_crc32"

# Image and label chunks: blosc(lz4, clevel 9, byte shuffle). Measured per 512 x 512 float16 slice of the
# real CT (one thread), bytes against the notebook's float16 `.npy`: lz4-9 0.58x, encode 0.5 ms, decode
# 0.11 ms; zstd-1 0.47x, encode 1.5 ms, decode 0.49 ms; lz4hc-2 0.55x but encode 2.9 ms. On the synthetic
# 512 x 512 x 64 phantoms (one case, process time): lz4-9 encode 31 ms / decode 7.5 ms, 0.58x of float16;
# zstd-1 90 ms / 32 ms, 0.43x; zstd-3 217 ms / 27 ms. Reads happen every epoch and ingest should run at
# the speed of reading its input, so lz4-9 (docs/store.md). Any blosc or zstd store still reads.
BLOSC = {"cname": "lz4", "clevel": 9, "shuffle": "shuffle"}
_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


# ----------------------------------------------------------------------------------------------------------
# Chunk keys and codecs


def chunk_key(coords: Sequence[int]) -> str:
    """The key of the chunk at `coords` in Zarr v3's default chunk key encoding with "/" (`c/0/0/5`)."""
    return "/".join(["c", *(str(int(c)) for c in coords)])


def slice_chunk_path(array_dir: Path, z: int) -> Path:
    """The chunk file of slice `z` of an (X, Y, Z) array chunked (X, Y, 1) (`<array>/c/0/0/<z>`): ingest
    writes through it and the store's fast reader reads through it."""
    return array_dir / chunk_key((0, 0, z))


def slice_chunks(shape: Sequence[int]) -> tuple[int, int, int]:
    """Chunk shape of an image or label array: one slice per chunk."""
    return (int(shape[0]), int(shape[1]), 1)


def slice_array_metadata(shape: Sequence[int], dtype) -> dict[str, Any]:
    """The `zarr.json` of an (X, Y, Z) image or label array: exactly what zarr-python writes for
    `create_array(shape, chunks=slice_chunks(shape), dtype, compressors=BloscCodec(**BLOSC), fill_value=0,
    dimension_names=DIMENSION_NAMES, attributes={EVERY_CHUNK: True})` (a test holds the two equal), so
    ingest's workers need no zarr-python. Whoever writes these arrays writes every slice's chunk file."""
    dtype = np.dtype(dtype)
    bytes_codec: dict[str, Any] = {"name": "bytes"}
    if dtype.itemsize > 1:
        bytes_codec["configuration"] = {"endian": "little"}
    blosc = {"typesize": dtype.itemsize, **BLOSC, "blocksize": 0}
    return {
        "shape": [int(n) for n in shape],
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(slice_chunks(shape))}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0 if dtype.kind == "f" else 0,
        "codecs": [bytes_codec, {"name": "blosc", "configuration": blosc}],
        "attributes": {EVERY_CHUNK: True},
        "dimension_names": list(DIMENSION_NAMES),
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def required_slices(array_attrs: dict[str, Any], case_attrs: dict[str, Any], name: str, depth: int) -> np.ndarray | None:
    """Which slices of a case's image or label array (`name`) must have a chunk file: bool (depth,), or None
    where a missing file cannot be told from a slice of zeros.

    Every slice of an array written with `EVERY_CHUNK`; of an older label, the slices the case's
    `liver_pixels_per_slice` counts liver in; of an older image, none can be told.
    """
    if array_attrs.get(EVERY_CHUNK) is True:
        return np.ones(depth, dtype=bool)
    per_slice = case_attrs.get("liver_pixels_per_slice")
    if name == LABEL and isinstance(per_slice, list) and len(per_slice) == depth:
        try:
            return np.asarray(per_slice, dtype=np.int64) > 0
        except (TypeError, ValueError):  # not numbers: the attributes were damaged; nothing to go by
            return None
    return None


def written_chunk_bytes(array_attrs: dict[str, Any], depth: int) -> np.ndarray | None:
    """Each slice's chunk file size as ingest wrote it (`CHUNK_BYTES`): int64 (depth,), or None where the array
    does not say (written before it) or says something else than `depth` whole numbers."""
    sizes = array_attrs.get(CHUNK_BYTES)
    if not isinstance(sizes, list) or len(sizes) != depth or not all(type(n) is int and n > 0 for n in sizes):
        return None
    return np.asarray(sizes, dtype=np.int64)


def written_chunk_crc32(array_attrs: dict[str, Any], depth: int) -> list[int] | None:
    """Each slice's chunk file checksum as ingest wrote it (`CHUNK_CRC32`), or None where the array does not say
    (written before it) or says something else than `depth` 32-bit whole numbers."""
    sums = array_attrs.get(CHUNK_CRC32)
    if not isinstance(sums, list) or len(sums) != depth or not all(type(n) is int and 0 <= n < 2**32 for n in sums):
        return None
    return sums


def chunk_checksum(data: bytes) -> int:
    """The checksum of a chunk file's bytes that `CHUNK_CRC32` records: zlib's CRC-32 (the standard library's:
    ~0.08 ms per 300 KB slice here, on a 0.5 ms encode)."""
    return zlib.crc32(data)


def group_metadata(attrs: dict[str, Any]) -> dict[str, Any]:
    """The `zarr.json` of a group holding `attrs` (as zarr-python writes it)."""
    return {"attributes": attrs, "zarr_format": 3, "node_type": "group"}


def write_metadata(node_dir: Path, meta: dict[str, Any]) -> None:
    """Write a node's `zarr.json` in place (for nodes in ingest's work folder, which enter the store whole;
    `update_attrs` for nodes already in the store)."""
    Path(node_dir).mkdir(parents=True, exist_ok=True)
    (Path(node_dir) / METADATA_FILE).write_text(metadata_text(meta))


def metadata_text(meta: dict[str, Any]) -> str:
    """A `zarr.json`'s text: JSON indented by 2 as zarr-python writes it, but a list of plain values on one line
    (`chunk_bytes`, `chunk_crc32`, `liver_pixels_per_slice`: one per slice; one number a line made 500 lines per array).
    NaN and infinity are refused (JSON has none)."""
    return _json_text(json.loads(json.dumps(meta, allow_nan=False)), "")  # keys as JSON makes them (strings)


def _json_text(value: Any, indent: str) -> str:
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = (f"{inner}{json.dumps(key)}: {_json_text(item, inner)}" for key, item in value.items())
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        return "[\n" + ",\n".join(inner + _json_text(item, inner) for item in value) + f"\n{indent}]"
    return json.dumps(value)  # a plain value, an empty object, a list of plain values: one line


def slice_encoder() -> Callable[[np.ndarray], bytes]:
    """encode(slice (X, Y) C-contiguous) -> the bytes of its chunk file in an array of
    `slice_array_metadata` (numcodecs' blosc, typesize from the slice's dtype)."""
    import numcodecs

    return numcodecs.Blosc(
        cname=BLOSC["cname"], clevel=BLOSC["clevel"], shuffle=_BLOSC_SHUFFLE[BLOSC["shuffle"]], blocksize=0
    ).encode


def create_index_array(group, name: str, values: np.ndarray):
    """Create and fill one index column in `group` (one chunk, zstd, written even when all zeros)."""
    from zarr.codecs import ZstdCodec

    array = group.create_array(
        name,
        shape=values.shape,
        chunks=(max(values.shape[0], 1), *values.shape[1:]),
        dtype=values.dtype,
        compressors=ZstdCodec(level=INDEX_ZSTD_LEVEL),
        fill_value=0,
        config={"write_empty_chunks": True},
    )
    if values.size:
        array[...] = values
    return array


ChunkCodec = tuple[Callable[[np.ndarray], bytes], Callable[[bytes, np.ndarray], None]]


def slice_chunk_codec(array) -> ChunkCodec | None:
    """(encode, decode) of one slice chunk of a zarr array, or None when the array is not in the plain
    layout that liverctl reads and writes itself: local store, (X, Y, Z) chunked (X, Y, 1), default "/"
    chunk keys, codecs exactly [bytes little-endian (no transpose, so C order), optional blosc or zstd].

    encode(slice (X, Y) C-contiguous) -> bytes; decode(bytes, out (X, Y) C-contiguous) fills `out`.
    """
    if not _is_plain_slice_layout(array):
        return None
    from zarr.codecs import BytesCodec

    codecs = list(array.metadata.codecs)
    if not isinstance(codecs[0], BytesCodec):
        return None
    endian = codecs[0].endian
    if endian is not None and getattr(endian, "value", endian) != "little":
        return None
    if len(codecs) > 2:
        return None
    return _raw_codec() if len(codecs) == 1 else _compressed_codec(codecs[1])


def _is_plain_slice_layout(array) -> bool:
    from zarr.storage import LocalStore

    return isinstance(array.store, LocalStore) and is_plain_slice_metadata(array.metadata.to_dict())


def is_plain_slice_metadata(meta: dict[str, Any]) -> bool:
    """Whether an array's `zarr.json` (or zarr-python's `metadata.to_dict()`) describes the plain slice layout:
    (X, Y, Z) chunked (X, Y, 1) with default "/" chunk keys, so each slice's chunk file is at `slice_chunk_path`
    (the codecs are `slice_chunk_codec`'s to judge)."""
    def table(value: Any) -> dict:  # anyone's zarr.json: a table may be any JSON value
        return value if isinstance(value, dict) else {}

    shape = meta.get("shape")
    grid = table(table(meta.get("chunk_grid")).get("configuration"))
    encoding = table(meta.get("chunk_key_encoding"))
    separator = table(encoding.get("configuration")).get("separator")
    return (
        isinstance(shape, (list, tuple))
        and len(shape) == 3
        and isinstance(grid.get("chunk_shape"), (list, tuple))
        and tuple(grid["chunk_shape"]) == slice_chunks(shape)
        and encoding.get("name") == "default"
        and separator == "/"
    )


def _raw_codec() -> ChunkCodec:
    def encode(values: np.ndarray) -> bytes:
        return values.tobytes()

    def decode(raw: bytes, out: np.ndarray) -> None:
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, dtype=np.uint8)

    return encode, decode


def _compressed_codec(codec) -> ChunkCodec | None:
    import numcodecs
    from zarr.codecs import BloscCodec, ZstdCodec

    if isinstance(codec, BloscCodec):
        from numcodecs import blosc

        blosc_codec = numcodecs.Blosc(
            cname=getattr(codec.cname, "value", codec.cname),
            clevel=codec.clevel,
            shuffle=_BLOSC_SHUFFLE[getattr(codec.shuffle, "value", "shuffle")],
            blocksize=codec.blocksize or 0,
        )

        def decode(raw: bytes, out: np.ndarray) -> None:
            blosc.decompress(raw, out)

        return blosc_codec.encode, decode
    if isinstance(codec, ZstdCodec):
        zstd = numcodecs.Zstd(level=codec.level)

        def decode_zstd(raw: bytes, out: np.ndarray) -> None:
            zstd.decode(raw, out=out)

        return zstd.encode, decode_zstd
    return None


# ----------------------------------------------------------------------------------------------------------
# Node metadata and attributes


def read_metadata(node_dir: Path) -> dict[str, Any] | None:
    """A node's `zarr.json` as a dict; None if it is missing, unreadable, not JSON or not a JSON object."""
    try:
        meta = json.loads((Path(node_dir) / METADATA_FILE).read_text(), parse_constant=_no_json_constant,
                          parse_float=_finite_float)
    except (OSError, ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, a huge integer; nested deep
        return None
    return meta if isinstance(meta, dict) else None


def _no_json_constant(name: str) -> float:
    """NaN and infinity are no JSON (`metadata_text` refuses to write them): a zarr.json holding them is unreadable,
    not a document that a later `update_attrs` fails to write back."""
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError(f"{text[:20]} is beyond a float")
    return value


def read_attrs(node_dir: Path) -> dict[str, Any]:
    """A node's attributes ({} if its metadata is missing or unreadable, or holds no attributes object)."""
    attrs = (read_metadata(node_dir) or {}).get("attributes")
    return attrs if isinstance(attrs, dict) else {}


def update_attrs(node_dir: Path, updates: dict[str, Any]) -> bool:
    """Set attributes of the Zarr node at `node_dir`; False if nothing changed.

    The node's `zarr.json` is replaced atomically (`liverctl.files.write_atomic`): zarr-python would rewrite
    it in place, and a kill then would leave a store no client can open.
    """
    meta = read_metadata(node_dir)
    if meta is None:
        raise LiverctlError(f"missing or unreadable {METADATA_FILE}", path=node_dir)
    attributes = meta.setdefault("attributes", {})
    if all(attributes.get(k, object()) == v for k, v in updates.items()):
        return False
    attributes.update(updates)
    _replace_metadata(node_dir, meta)
    return True


def create_group(node_dir: Path, attrs: dict[str, Any]) -> None:
    """Make `node_dir` a Zarr group holding `attrs`, its `zarr.json` written atomically.

    Not `zarr.open_group(mode="w")`: that deletes the folder first (and anything a reader had found in it).
    """
    Path(node_dir).mkdir(parents=True, exist_ok=True)
    _replace_metadata(node_dir, group_metadata(attrs))


def _replace_metadata(node_dir: Path, meta: dict[str, Any]) -> None:
    """Replace a node's `zarr.json` atomically (`liverctl.files.write_atomic`)."""
    from liverctl.files import write_atomic

    path = Path(node_dir) / METADATA_FILE
    write_atomic(path, metadata_text(meta), what=f"store metadata {path.name}")


def is_group(node_dir: Path) -> bool:
    return (read_metadata(node_dir) or {}).get("node_type") == "group"
