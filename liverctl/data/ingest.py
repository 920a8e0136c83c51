"""NIfTI folder -> Zarr store: atomic per case, resumable, parallel.

How a run goes:
1. plan the sources (`liverctl.data.sources.plan`): find each source's cases in its layout, name the source,
   choose its role (main or extra), liver labels and id prefix; unpaired or duplicate files become
   failures, the rest go on;
2. skip every case already complete in the store whose source files are unchanged (size and mtime, or
   failing that the sha256) and whose liver labels are the same;
3. ingest the others in worker processes: each writes its case as a standalone Zarr group in a work
   folder beside the store (`.<store name>.ingest/work/<id>`), with `complete=true` in the attributes
   written last; the main process then renames the folder into `cases/<id>` (a case appears whole or
   not at all);
4. assign patient-level folds (seeded, balanced by liver volume) to the training cases of the sources
   in the folds, keeping the folds of the cases that already have one (same --folds and --fold-seed);
   the other training cases get `TRAIN_ONLY_FOLD`; rebuild the slice index, writing each only where it
   changed, so a second run changes nothing.

A killed run leaves at most a work folder, which the next run deletes before it starts.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.data.nifti import read_nifti, short_error
from liverctl.data.sources import CaseFiles
from liverctl.data.sources.labels import check_label_values
from liverctl.data.sources.plan import LabelSpec, LayoutSpec, SourcePlan, plan_sources
from liverctl.data.store import (
    CASES_GROUP,
    INDEX_GROUP,
    STORE_FORMAT,
    TRAIN_ONLY_FOLD,
    SliceArrayWriter,
    store_bytes,
)
from liverctl.disk import is_disk_full, no_space_message
from liverctl.errors import LiverctlError
from liverctl.files import file_sha256, write_atomic
from liverctl.workers import mp_context

FLOAT16_MAX = 65504.0
PERCENTILES = (0.5, 1, 5, 50, 95, 99, 99.5)
_Z_BLOCK = 16  # slices converted / written at a time (bounds the extra memory per worker)

ProgressCallback = Callable[[str, "str | None", int, int], None]
"""on_progress(event, case_id, done, total): "plan" (total = cases to ingest), then "case" (ingested) or
"failed" for each, with done = cases finished so far."""


@dataclass
class SourceCounts:
    """One source of the store after a run: what it is and how many of its cases are where."""

    layout: str
    role: str  # "main" or "extra"
    in_folds: bool
    train: int = 0  # complete training cases in the store
    test: int = 0
    ingested: int = 0  # by this run
    unchanged: int = 0
    folds: dict[int, int] = field(default_factory=dict)  # fold code -> training cases


@dataclass
class IngestSummary:
    """What an ingest run did and what the store holds afterwards."""

    store: Path
    cases: int = 0  # complete cases in the store
    train_cases: int = 0
    test_cases: int = 0
    ingested: list[str] = field(default_factory=list)  # written by this run
    unchanged: list[str] = field(default_factory=list)  # already complete and unchanged: skipped
    slices: int = 0  # slices in the store
    liver_slices: int = 0  # of which with at least one liver pixel
    bytes_read: int = 0  # source bytes read by this run
    bytes_stored: int = 0  # size of the store on disk
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)  # one line each: "<file>: <problem>"
    notes: list[str] = field(default_factory=list)  # one line each: done, but worth a word (label values)
    sources: dict[str, SourceCounts] = field(default_factory=dict)  # every source of the store, by name

    @property
    def ok(self) -> bool:
        return not self.failures


# ----------------------------------------------------------------------------------------------------------
# Source files


def file_fingerprint(path: Path) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime": st.st_mtime_ns}




def _check_finite(data: np.ndarray, path: Path, what: str) -> None:
    if data.dtype.kind != "f":
        return
    bad = data.size - int(np.count_nonzero(np.isfinite(data)))
    if bad:
        raise LiverctlError(f"{bad} non-finite {what} voxels (NaN or inf)", path=path)


class Float16Histogram:
    """Counts of each of the 65,536 float16 bit patterns, added block by block while a volume is converted
    (`Float16Converter`); `stats()` gives exact min, max, mean, std and percentiles (numpy's linear
    method) from them, with no sort and no second pass over the voxels."""

    def __init__(self) -> None:
        self.counts = np.zeros(1 << 16, dtype=np.int64)

    def add(self, values16: np.ndarray) -> None:
        # NIfTI arrays come in Fortran order, where a slab of slices is contiguous: no copy.
        self.counts += np.bincount(values16.view(np.uint16).ravel(order="K"), minlength=1 << 16)

    def stats(self) -> dict[str, float]:
        counts = self.counts
        present = np.flatnonzero(counts)
        values = present.astype(np.uint16).view(np.float16).astype(np.float64)
        order = np.argsort(values, kind="stable")
        values, weights = values[order], counts[present][order]
        n = int(weights.sum())
        cumulative = np.cumsum(weights)

        def at_rank(rank: int) -> float:  # value of the rank-th smallest voxel (0-based)
            return float(values[np.searchsorted(cumulative, rank, side="right")])

        mean = float((values * weights).sum() / n)
        stats = {
            "min": float(values[0]),
            "max": float(values[-1]),
            "mean": mean,
            "std": float(np.sqrt(((values - mean) ** 2 * weights).sum() / n)),
        }
        for q in PERCENTILES:
            pos = q / 100.0 * (n - 1)
            lo = int(np.floor(pos))
            low, high = at_rank(lo), at_rank(min(lo + 1, n - 1))
            stats[f"p{q:g}"] = low + (pos - lo) * (high - low)
        return stats


def float16_stats(volume16: np.ndarray) -> dict[str, float]:
    """Exact min, max, mean, std and percentiles of a float16 volume (`Float16Histogram`)."""
    hist = Float16Histogram()
    for z0 in range(0, volume16.shape[-1], _Z_BLOCK):
        hist.add(volume16[..., z0 : z0 + _Z_BLOCK])
    return hist.stats()


class Float16Converter:
    """Source voxels -> float16, slab by slab, counting the float16 values on the way (`hist`).

    Integer sources of 8 or 16 bits (most CT) convert through a table of every possible value: one
    gather instead of numpy's scalar float16 rounding, and the histogram is a bincount of the raw values
    mapped through the same table. Other sources use `astype`. Both give `data.astype(np.float16)` exactly.
    """

    def __init__(self, dtype: np.dtype):
        dtype = np.dtype(dtype)
        self.hist = Float16Histogram()
        self.table = None
        if dtype.kind in "iu" and dtype.itemsize <= 2:
            self.raw = np.dtype(f"u{dtype.itemsize}")
            self.table = np.arange(1 << (8 * dtype.itemsize), dtype=np.int64).astype(self.raw).view(dtype)
            with np.errstate(over="ignore"):  # uint16 above 65504: inf, but ingest refuses those first
                self.table = self.table.astype(np.float16)
            self.table_bits = self.table.view(np.uint16)

    def convert(self, slab: np.ndarray) -> np.ndarray:
        """Shape: slab (X, Y, n) -> float16 (n, X, Y), C-contiguous (one chunk per slice)."""
        if self.table is None:
            out = np.ascontiguousarray(slab.transpose(2, 0, 1)).astype(np.float16)
            self.hist.add(out)
            return out
        raw = slab.view(self.raw)
        counts = np.bincount(raw.ravel(order="K"), minlength=self.table.size)
        self.hist.counts += np.bincount(self.table_bits, weights=counts, minlength=1 << 16).astype(np.int64)
        return self.table.take(np.ascontiguousarray(raw.transpose(2, 0, 1)))


# ----------------------------------------------------------------------------------------------------------
# One case (runs in a worker process)


@dataclass(frozen=True)
class _CaseJob:
    case: CaseFiles
    work_dir: str
    liver_labels: tuple[int, ...] | None
    workers: int = 1  # processes reading at the same time: each may take that share of the memory


@dataclass
class _CaseResult:
    case_id: str
    ok: bool
    message: str = ""
    bytes_read: int = 0
    notes: list[str] = field(default_factory=list)  # one line each, for the user (e.g. odd label values)
    no_space: bool = False  # the disk filled while writing: no later case can be written either


def _liver_mask(label: np.ndarray, liver_labels: tuple[int, ...] | None) -> np.ndarray:
    if liver_labels is None:
        return (label > 0).astype(np.uint8)
    return np.isin(label, np.asarray(liver_labels)).astype(np.uint8)


def _label_values_note(label: np.ndarray, path: Path, liver: np.ndarray) -> str | None:
    """Say so when a label holds values other than 0/1 and every value > 0 was taken as liver."""
    liver_voxels = int(liver.sum(dtype=np.int64))
    if float(label.min()) >= 0 and float(label.max()) <= 1:
        if label.dtype.kind != "f" or np.count_nonzero(label == 1) == liver_voxels:
            return None  # only 0 and 1 (a float label may hold fractions in between)
    values = np.unique(label)  # a sort, but only for the odd labels this note is about
    shown = ", ".join(f"{v:g}" for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
    return (
        f"{path}: label values {shown}; without --liver-labels every value > 0 was taken as liver "
        f"({liver_voxels} voxels). If only some mean liver, ingest again with e.g. "
        "--liver-labels 1"
    )


def _source_attrs(path: Path, prefix: str = "") -> dict[str, Any]:
    fp = file_fingerprint(path)
    return {
        f"{prefix}source": str(path.absolute()),
        f"{prefix}size": fp["size"],
        f"{prefix}mtime": fp["mtime"],
        f"{prefix}sha256": file_sha256(path),
    }


def _build_case(job: _CaseJob) -> _CaseResult:
    case = job.case
    try:
        return _write_case(job)
    except LiverctlError as exc:
        return _CaseResult(case.case_id, False, str(exc))
    except MemoryError:
        return _CaseResult(case.case_id, False, f"{case.volume}: out of memory while ingesting")
    except OSError as exc:
        if not is_disk_full(exc):
            return _CaseResult(case.case_id, False, f"{case.volume}: ingest failed ({short_error(exc)})")
        shutil.rmtree(Path(job.work_dir) / case.case_id, ignore_errors=True)  # no half-written case stays
        message = no_space_message(job.work_dir, f"case {case.case_id} ({case.volume})")
        return _CaseResult(case.case_id, False, message, no_space=True)
    except Exception as exc:  # one odd file must not stop the other cases; name it and the error
        return _CaseResult(case.case_id, False, f"{case.volume}: ingest failed ({short_error(exc)})")


def _write_case(job: _CaseJob) -> _CaseResult:
    attrs, image, liver, notes = _read_case(job.case, job.liver_labels, job.workers)
    _write_case_group(Path(job.work_dir) / job.case.case_id, image, liver, attrs)
    return _CaseResult(
        job.case.case_id, True, bytes_read=attrs["size"] + attrs.get("label_size", 0), notes=notes
    )


def _read_case(
    case: CaseFiles, liver_labels: tuple[int, ...] | None, workers: int = 1
) -> tuple[dict[str, Any], np.ndarray, np.ndarray | None, list[str]]:
    """Load and check a case. Returns its attributes (all but `complete`; `stats` None until written),
    the image as read (X, Y, Z) in the file's dtype with scaling applied, for training cases the liver
    mask as uint8 (X, Y, Z), and notes for the user."""
    notes: list[str] = []
    attrs: dict[str, Any] = {"split": case.split}
    attrs.update(_source_attrs(case.volume))
    img, data = read_nifti(case.volume, workers=workers)
    _check_finite(data, case.volume, "image")
    in_range = data.dtype in (np.int8, np.uint8, np.int16)  # always within float16's range: no pass needed
    peak = 0.0 if in_range else float(max(abs(float(data.min())), abs(float(data.max()))))
    if peak > FLOAT16_MAX:
        raise LiverctlError(
            f"has values up to {peak:g}, beyond float16's range (|HU| <= {FLOAT16_MAX:g}); is it CT in HU?",
            path=case.volume,
        )
    shape = tuple(int(n) for n in data.shape)

    liver = None
    if case.label is not None:
        attrs.update(_source_attrs(case.label, "label_"))
        _, label = read_nifti(case.label, workers=workers)
        if tuple(label.shape) != shape:
            raise LiverctlError(
                f"label shape {tuple(label.shape)} differs from its volume's {shape} ({case.volume.name})",
                path=case.label,
            )
        _check_finite(label, case.label, "label")
        check_label_values(label, case.known_labels, case.label)
        liver = _liver_mask(label, liver_labels)
        if liver_labels is None and (note := _label_values_note(label, case.label, liver)):
            notes.append(note)
        del label

    slope, inter = img.header.get_slope_inter()
    attrs.update(
        {
            "dtype": str(img.get_data_dtype()),
            "scaling": [None if slope is None else float(slope), None if inter is None else float(inter)],
            "shape": list(shape),
            "affine": [[float(v) for v in row] for row in img.affine],
            "spacing": [float(s) for s in img.header.get_zooms()[:3]],
            "stats": None,  # counted while the writer converts to float16 (`Float16Converter`)
            "liver_labels": None,
            "liver_voxels": None,
            "fold": None,  # set over all cases at the end of the run
        }
    )
    if liver is not None:
        per_slice = liver.sum(axis=(0, 1), dtype=np.int64)
        attrs["liver_labels"] = None if liver_labels is None else list(liver_labels)
        attrs["liver_voxels"] = int(per_slice.sum())
        attrs["liver_pixels_per_slice"] = [int(n) for n in per_slice]
    return attrs, data, liver, notes


def _write_case_group(
    out: Path, image: np.ndarray, liver: np.ndarray | None, attrs: dict[str, Any]
) -> None:
    """Write a case as a standalone Zarr group at `out`, `complete=true` in the last metadata write.

    One pass over the image, `_Z_BLOCK` slices at a time: convert to float16 (`image.astype(float16)`
    exactly), count the values for `attrs["stats"]`, encode and write each slice's chunk file
    (`liverctl.data.store.SliceArrayWriter`).
    """
    import zarr

    if out.exists():
        shutil.rmtree(out)
    group = zarr.open_group(str(out), mode="w")
    shape = tuple(image.shape)
    image_writer = SliceArrayWriter(group, "image", shape, np.float16)
    label_writer = SliceArrayWriter(group, "label", shape, np.uint8) if liver is not None else None
    converter = Float16Converter(image.dtype)
    for z0 in range(0, shape[2], _Z_BLOCK):
        slab16 = converter.convert(image[:, :, z0 : z0 + _Z_BLOCK])
        for k, values in enumerate(slab16):
            image_writer.write(z0 + k, values)
            if label_writer is not None:
                label_writer.write(z0 + k, liver[:, :, z0 + k])
    group.attrs.update({**attrs, "stats": converter.hist.stats(), "complete": True})


def _worker_init() -> None:
    """Workers leave Ctrl-C to the main process (which stops them), and exit if it is killed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def exit_when_orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)  # the main process died: our half-written case is in the work folder, cleaned later

    threading.Thread(target=exit_when_orphaned, daemon=True).start()


# ----------------------------------------------------------------------------------------------------------
# The store as a whole (main process)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=False), what=f"store metadata {path.name}")


def _update_attrs(node_dir: Path, updates: dict[str, Any]) -> bool:
    """Set attributes of the Zarr node at `node_dir` (atomic rewrite of its zarr.json); False if no change."""
    meta = _read_json(node_dir / "zarr.json")
    if meta is None:
        raise LiverctlError("missing or unreadable zarr.json", path=node_dir)
    attributes = meta.setdefault("attributes", {})
    if all(attributes.get(k, object()) == v for k, v in updates.items()):
        return False
    attributes.update(updates)
    _write_json_atomic(node_dir / "zarr.json", meta)
    return True


def _open_or_create_store(path: Path) -> None:
    import zarr

    if path.exists() and not path.is_dir():
        raise LiverctlError("exists and is not a folder; choose another --store", path=path)
    if path.is_dir() and any(path.iterdir()):
        meta = _read_json(path / "zarr.json")
        fmt = (meta or {}).get("attributes", {}).get("format")
        if fmt != STORE_FORMAT:
            raise LiverctlError("exists and is not a liverctl store; choose another --store", path=path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        root = zarr.open_group(str(path), mode="w")
        root.attrs.update({"format": STORE_FORMAT})
    if _read_json(path / CASES_GROUP / "zarr.json") is None:
        zarr.open_group(str(path / CASES_GROUP), mode="w")


@contextlib.contextmanager
def _exclusive_work_dir(store: Path) -> Iterator[Path]:
    """Lock the store against a second ingest and give a clean work folder on the same file system."""
    import fcntl

    base = store.parent / f".{store.name}.ingest"
    base.mkdir(parents=True, exist_ok=True)
    lock_file = open(base / "lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LiverctlError(
                "another `liverctl ingest` is writing this store; wait for it", path=store
            ) from None
        work = base / "work"
        if work.exists():  # left by a killed run
            shutil.rmtree(work)
        work.mkdir()
        yield work
        shutil.rmtree(base, ignore_errors=True)
    finally:
        lock_file.close()


def _complete_cases(store: Path) -> dict[str, dict[str, Any]]:
    """Attributes of every complete case; removes case folders that are not complete."""
    cases: dict[str, dict[str, Any]] = {}
    cases_dir = store / CASES_GROUP
    for entry in sorted(cases_dir.iterdir()) if cases_dir.is_dir() else []:
        if not entry.is_dir():
            continue
        attrs = (_read_json(entry / "zarr.json") or {}).get("attributes", {})
        if attrs.get("complete") is True:
            cases[entry.name] = attrs
        else:  # never written by ingest (which renames whole cases in), but never trust a partial case
            shutil.rmtree(entry)
    return cases


def _is_unchanged(
    case: CaseFiles, attrs: dict[str, Any] | None, liver_labels: tuple[int, ...] | None
) -> bool:
    if attrs is None or attrs.get("split") != case.split:
        return False
    if case.split == "train":
        stored = attrs.get("liver_labels")
        if (None if stored is None else tuple(stored)) != liver_labels:
            return False
    sources = [(case.volume, "")] + ([(case.label, "label_")] if case.label is not None else [])
    for path, prefix in sources:
        fp = file_fingerprint(path)
        if fp["size"] != attrs.get(f"{prefix}size"):
            return False
        if fp["mtime"] != attrs.get(f"{prefix}mtime") and file_sha256(path) != attrs.get(f"{prefix}sha256"):
            return False
    return True


def _commit_case(built: Path, store: Path, case_id: str, work: Path) -> None:
    """Move a finished case into the store, replacing an older version of it."""
    target = store / CASES_GROUP / case_id
    if target.exists():
        old = work / f"replaced-{case_id}"
        os.rename(target, old)
        os.rename(built, target)
        shutil.rmtree(old)
    else:
        os.rename(built, target)


def assign_folds(
    liver_voxels: dict[str, int], n_folds: int, seed: int, fixed: dict[str, int] | None = None
) -> dict[str, int]:
    """Patient-level folds balanced by liver volume: cases sorted by liver voxels are dealt out in
    groups of `n_folds`, each group in a seeded random fold order. Depends only on the cases, not on
    the order they were ingested in.

    `fixed`: cases that keep the fold they have. When those folds are what the deal above gives, the
    other cases get theirs from it too (a store finished after an interrupted run equals one made in a
    single run); otherwise the new cases are dealt the same way onto the folds with fewest cases.
    """
    full = _deal(sorted(liver_voxels, key=lambda c: (liver_voxels[c], c)), n_folds, seed, [0] * n_folds)
    fixed = {c: f for c, f in (fixed or {}).items() if c in liver_voxels}
    if all(full[c] == f for c, f in fixed.items()):
        return full
    counts = [0] * n_folds
    for fold in fixed.values():
        counts[fold] += 1
    new = sorted((c for c in liver_voxels if c not in fixed), key=lambda c: (liver_voxels[c], c))
    return {**fixed, **_deal(new, n_folds, seed, counts)}


def _deal(ordered: list[str], n_folds: int, seed: int, counts: list[int]) -> dict[str, int]:
    """Deal `ordered` in groups of `n_folds`; each group goes to the folds ordered by (cases so far,
    position in a seeded random permutation) - with equal counts, the permutation itself."""
    rng = np.random.default_rng(seed)
    counts = list(counts)
    folds: dict[str, int] = {}
    for start in range(0, len(ordered), n_folds):
        rank = {int(f): i for i, f in enumerate(rng.permutation(n_folds))}
        order = sorted(range(n_folds), key=lambda f: (counts[f], rank[f]))
        for case_id, fold in zip(ordered[start : start + n_folds], order, strict=False):
            folds[case_id] = fold
            counts[fold] += 1
    return folds


def _index_columns(cases: dict[str, dict[str, Any]]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    ids = sorted(cases)
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("case", "z", "neighbors", "liver_pixels", "split", "fold")
    }
    offsets, slices = [], []
    row = 0
    for code, case_id in enumerate(ids):
        attrs = cases[case_id]
        depth = int(attrs["shape"][2])
        z = np.arange(depth, dtype=np.int32)
        columns["case"].append(np.full(depth, code, dtype=np.int32))
        columns["z"].append(z)
        columns["neighbors"].append(np.stack([np.maximum(z - 1, 0), z, np.minimum(z + 1, depth - 1)], axis=1))
        pixels = attrs.get("liver_pixels_per_slice") or [0] * depth
        columns["liver_pixels"].append(np.asarray(pixels, dtype=np.int64))
        is_test = attrs["split"] == "test"
        columns["split"].append(np.full(depth, 1 if is_test else 0, dtype=np.uint8))
        fold = -1 if is_test or attrs.get("fold") is None else int(attrs["fold"])
        columns["fold"].append(np.full(depth, fold, dtype=np.int8))
        offsets.append(row)
        slices.append(depth)
        row += depth
    dtypes = {
        "case": np.int32,
        "z": np.int32,
        "neighbors": np.int32,
        "liver_pixels": np.int64,
        "split": np.uint8,
        "fold": np.int8,
    }
    arrays = {}
    for name, parts in columns.items():
        if parts:
            arrays[name] = np.concatenate(parts).astype(dtypes[name])
        else:
            arrays[name] = np.zeros((0, 3) if name == "neighbors" else (0,), dtype=dtypes[name])
    attrs = {
        "cases": ids,
        "splits": [cases[c]["split"] for c in ids],
        "folds": [-1 if cases[c].get("fold") is None else int(cases[c]["fold"]) for c in ids],
        "slices": slices,
        "offsets": offsets,
        "sources": [cases[c].get("source_name") or "main" for c in ids],
    }
    return arrays, attrs


def _index_matches(store: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> bool:
    import zarr

    meta = _read_json(store / INDEX_GROUP / "zarr.json")
    if meta is None or meta.get("attributes") != attrs:
        return False
    try:
        group = zarr.open_group(str(store / INDEX_GROUP), mode="r")
        return all(np.array_equal(group[name][:], values) for name, values in arrays.items())
    except Exception:  # a damaged index is simply rebuilt
        return False


def _write_index(store: Path, work: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    import zarr
    from zarr.codecs import ZstdCodec

    built = work / INDEX_GROUP
    group = zarr.open_group(str(built), mode="w")
    for name, values in arrays.items():
        rows = max(values.shape[0], 1)
        array = group.create_array(
            name,
            shape=values.shape,
            chunks=(rows, *values.shape[1:]),
            dtype=values.dtype,
            compressors=ZstdCodec(level=3),
            fill_value=0,
        )
        if values.size:
            array[...] = values
    group.attrs.update(attrs)
    target = store / INDEX_GROUP
    if target.exists():
        old = work / "replaced-index"
        os.rename(target, old)
        os.rename(built, target)
        shutil.rmtree(old)
    else:
        os.rename(built, target)


# Store bytes per source voxel, from real CT (totalseg-dicom20: the image stored at 0.55 x float16, the
# label at 0.016 x uint8), rounded up so that the estimate errs towards the larger store.
_IMAGE_BYTES_PER_VOXEL = 1.3
_LABEL_BYTES_PER_VOXEL = 0.05


def check_free_space(store: Path, cases: list[CaseFiles]) -> int:
    """Estimate the bytes `cases` add to the store (from the NIfTI headers) and raise `LiverctlError` when
    the store's disk has less free space than that. Returns the estimate.

    A header that cannot be read counts nothing here: that case fails later with its own message.
    """
    import math

    from liverctl.data.nifti import open_nifti

    need = 0.0
    for case in cases:
        try:  # the checked header: an absurd one is refused by the case's own ingest, not counted here
            voxels = math.prod(open_nifti(case.volume).shape[:3])
        except Exception:  # reported by the case's own ingest
            continue
        need += voxels * (_IMAGE_BYTES_PER_VOXEL + (_LABEL_BYTES_PER_VOXEL if case.label else 0.0))
    disk = next(p for p in (store, *store.absolute().parents) if p.exists())
    free = shutil.disk_usage(disk).free
    if need > free:
        raise LiverctlError(
            f"the {len(cases)} case(s) to ingest need about {need / 1e9:.1f} GB but the store's disk has "
            f"{free / 1e9:.1f} GB free; free some space or give --store a folder on a larger disk",
            path=store,
        )
    return int(need)


def ingest_folder(
    data_dir: str | Path,
    store: str | Path = "store/liver.zarr",
    liver_labels: list[int] | tuple[int, ...] | None = None,
    n_folds: int = 5,
    fold_seed: int = 0,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> IngestSummary:
    """Ingest every case under `data_dir` into the store at `store`: `ingest_sources` with one source."""
    return ingest_sources(
        [Path(data_dir)],
        store,
        liver_labels=liver_labels,
        n_folds=n_folds,
        fold_seed=fold_seed,
        workers=workers,
        on_progress=on_progress,
    )


def ingest_sources(
    sources: list[str | Path],
    store: str | Path = "store/liver.zarr",
    liver_labels: LabelSpec = None,
    layouts: LayoutSpec = None,
    extra_in_folds: bool = False,
    n_folds: int = 5,
    fold_seed: int = 0,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> IngestSummary:
    """Ingest every case of `sources` (folders, or `NAME=PATH`) into the store at `store`.

    Steps: module docstring; names, roles, ids and liver labels: `liverctl.data.sources.plan`.
    `liver_labels`: values meaning liver, for every source or per source name ({"lits": [1, 2], None:
    [1]}). `layouts`: a layout forced on every source, or per source name. `extra_in_folds`: deal the
    extra sources' training cases into the folds too. `workers`: processes (None: all cores; 1: in this
    process). Raises `LiverctlError` for a missing, unrecognised or unusable source (before writing
    anything) or an unusable store path; per-case problems are listed in `IngestSummary.failures`, and
    every good case is still ingested.
    """
    started = time.perf_counter()
    if n_folds < 1:
        raise LiverctlError(f"--folds must be at least 1, not {n_folds}")
    store_path = Path(store)
    plan = plan_sources(sources, store_path, liver_labels, layouts, extra_in_folds)
    plan.check()
    summary = IngestSummary(store=store_path)
    summary.failures.extend(plan.problems)
    progress = on_progress or (lambda *args: None)

    _open_or_create_store(store_path)
    with _exclusive_work_dir(store_path) as work:
        root_meta = (_read_json(store_path / "zarr.json") or {}).get("attributes", {})
        same_folds = root_meta.get("n_folds") == n_folds and root_meta.get("fold_seed") == fold_seed
        changed = _update_attrs(store_path, {"sources": plan.records})  # before any case names a source
        existing = _complete_cases(store_path)
        jobs, sizes, owner = [], {}, {}
        for source in plan.sources:
            for case in source.cases:
                owner[case.case_id] = source
                try:
                    sizes[case.case_id] = os.path.getsize(case.volume)
                    if _is_unchanged(case, existing.get(case.case_id), source.liver_labels):
                        summary.unchanged.append(case.case_id)
                        continue
                except OSError as exc:  # a dangling link, no permission, a file gone since the listing
                    where = exc.filename or case.volume
                    summary.failures.append(
                        str(LiverctlError(f"cannot be read ({exc.strerror or exc})", path=where))
                    )
                    continue
                jobs.append(_CaseJob(case, str(work), source.liver_labels))
        # Biggest first: the slowest cases start early and the pool finishes together.
        jobs.sort(key=lambda j: -sizes[j.case.case_id])
        check_free_space(store_path, [job.case for job in jobs])
        progress("plan", None, 0, len(jobs))
        results = _run_jobs(jobs, workers)
        for finished, result in enumerate(results, start=1):
            summary.notes.extend(result.notes)
            if result.no_space:  # every later case would fail the same way: stop, keep what is complete
                results.close()  # stops the workers
                shutil.rmtree(work, ignore_errors=True)
                raise LiverctlError(
                    f"{result.message}; the {len(summary.ingested)} case(s) finished before are kept; "
                    "free some space and run ingest again"
                )
            if result.ok:
                built = work / result.case_id
                _update_attrs(built, _source_case_attrs(owner[result.case_id], existing.get(result.case_id)))
                _commit_case(built, store_path, result.case_id, work)
                summary.ingested.append(result.case_id)
                summary.bytes_read += result.bytes_read
                progress("case", result.case_id, finished, len(jobs))
            else:
                summary.failures.append(result.message)
                progress("failed", result.case_id, finished, len(jobs))

        cases = _complete_cases(store_path)
        records = {r["name"]: r for r in plan.records}
        changed |= bool(summary.ingested)
        changed |= _set_sources_and_folds(store_path, cases, records, plan.main, n_folds, fold_seed, same_folds)
        arrays, index_attrs = _index_columns(cases)
        if not _index_matches(store_path, arrays, index_attrs):
            _write_index(store_path, work, arrays, index_attrs)
            changed = True
        main = records.get(plan.main or "", {})
        root_attrs = {
            "format": STORE_FORMAT,
            "liver_labels": main.get("liver_labels", root_meta.get("liver_labels")),
            "n_folds": n_folds,
            "fold_seed": fold_seed,
        }
        if changed or any(root_meta.get(k) != v for k, v in root_attrs.items()) or "updated" not in root_meta:
            root_attrs["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            _update_attrs(store_path, root_attrs)

    summary.cases = len(cases)
    summary.train_cases = sum(1 for a in cases.values() if a["split"] == "train")
    summary.test_cases = summary.cases - summary.train_cases
    summary.sources = _source_counts(cases, records, summary)
    summary.slices = int(arrays["z"].shape[0])
    summary.liver_slices = int(np.count_nonzero(arrays["liver_pixels"]))
    summary.bytes_stored = store_bytes(store_path)
    summary.seconds = time.perf_counter() - started
    return summary


def _source_case_attrs(source: SourcePlan, old: dict[str, Any] | None) -> dict[str, Any]:
    """The attributes a freshly built case gets from its source before it enters the store: its source
    name and, for a train-only case, `TRAIN_ONLY_FOLD`; a case re-ingested keeps its fold."""
    if not source.in_folds:
        return {"source_name": source.name, "fold": TRAIN_ONLY_FOLD}
    fold = (old or {}).get("fold")
    keep = isinstance(fold, int) and fold >= 0 and (old or {}).get("split") == "train"
    return {"source_name": source.name, "fold": fold if keep else None}


def _set_sources_and_folds(
    store: Path,
    cases: dict[str, dict[str, Any]],
    records: dict[str, dict[str, Any]],
    main: str | None,
    n_folds: int,
    fold_seed: int,
    same_folds: bool,
) -> bool:
    """Give every case its source name and fold (in `cases` too); True if any attribute changed.

    Cases from before sources existed belong to the main source. Training cases of a source in the
    folds keep their fold if the fold count and seed are unchanged; the others are dealt
    (`assign_folds`). Training cases of the other sources, and of unknown ones, are train-only.
    """
    updates: dict[str, dict[str, Any]] = {}
    voxels, fixed = {}, {}
    for case_id, attrs in cases.items():
        source = attrs.get("source_name") or main
        if source is not None and attrs.get("source_name") != source:
            updates.setdefault(case_id, {})["source_name"] = source
        if attrs["split"] != "train":
            continue
        if not records.get(source or "", {}).get("in_folds", False):
            updates.setdefault(case_id, {})["fold"] = TRAIN_ONLY_FOLD
            continue
        voxels[case_id] = int(attrs.get("liver_voxels") or 0)
        fold = attrs.get("fold")
        if same_folds and isinstance(fold, int) and 0 <= fold < n_folds:
            fixed[case_id] = fold
    for case_id, fold in assign_folds(voxels, n_folds, fold_seed, fixed).items():
        updates.setdefault(case_id, {})["fold"] = fold
    changed = False
    for case_id, values in updates.items():
        if _update_attrs(store / CASES_GROUP / case_id, values):
            changed = True
        cases[case_id].update(values)
    return changed


def _source_counts(
    cases: dict[str, dict[str, Any]], records: dict[str, dict[str, Any]], summary: IngestSummary
) -> dict[str, SourceCounts]:
    counts = {
        name: SourceCounts(r.get("layout", "?"), r.get("role", "?"), bool(r.get("in_folds")))
        for name, r in records.items()
    }
    ingested, unchanged = set(summary.ingested), set(summary.unchanged)
    for case_id, attrs in cases.items():
        name = attrs.get("source_name") or "main"
        c = counts.setdefault(name, SourceCounts("?", "?", False))
        if attrs["split"] == "train":
            c.train += 1
            fold = -1 if attrs.get("fold") is None else int(attrs["fold"])
            c.folds[fold] = c.folds.get(fold, 0) + 1
        else:
            c.test += 1
        c.ingested += case_id in ingested
        c.unchanged += case_id in unchanged
    return counts


def _run_jobs(jobs: list[_CaseJob], workers: int | None) -> Iterator[_CaseResult]:
    """Run the jobs in this process (one worker) or a process pool, yielding results as they finish.

    A worker killed by the OS (the OOM killer's SIGKILL) breaks the whole pool: the jobs it never started
    go on in a fresh pool, and those in flight are run again one at a time, so the case that kills its
    worker is the one reported ("worker killed, probably out of memory") and every other case is ingested.
    """
    n = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    jobs = [dataclasses.replace(job, workers=n) for job in jobs]
    if n == 1 or len(jobs) <= 1:
        for job in jobs:
            yield _build_case(job)
        return
    pending = collections.deque(jobs)
    while pending:
        lost = yield from _run_pool(pending, n)
        if len(lost) == 1:
            yield _killed(lost[0])
            continue
        for job in lost:  # several were in flight: alone, the one that dies is the culprit
            if (yield from _run_pool(collections.deque([job]), 1)):
                yield _killed(job)


def _killed(job: _CaseJob) -> _CaseResult:
    return _CaseResult(
        job.case.case_id,
        False,
        f"{job.case.volume}: worker killed while ingesting case {job.case.case_id}, probably out of memory",
    )


def _run_pool(pending: collections.deque[_CaseJob], n: int) -> Generator[_CaseResult, None, list[_CaseJob]]:
    """Run jobs taken from `pending` in a pool of `n` processes, at most `n` at a time (so that the jobs in
    flight are known), yielding results. Returns the jobs in flight when a worker died ([] if none did)."""
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(max_workers=n, initializer=_worker_init, mp_context=mp_context())
    in_flight: dict[Future, _CaseJob] = {}
    try:
        while pending or in_flight:
            while pending and len(in_flight) < n:
                job = pending.popleft()
                in_flight[pool.submit(_build_case, job)] = job
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            if any(isinstance(future.exception(), BrokenProcessPool) for future in done):
                wait(in_flight)  # the pool fails every unfinished job; the finished ones keep their result
                lost = []
                for future, job in in_flight.items():
                    if future.exception() is None:
                        yield future.result()
                    else:
                        lost.append(job)
                pool.shutdown(wait=True)
                return lost
            for future in done:
                del in_flight[future]
                yield future.result()
    except BaseException:
        # Ctrl-C or an error here: stop the workers now; their half-written cases stay in the work
        # folder, which the next run deletes.
        processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API to stop them
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)
        raise
    pool.shutdown()
    return []
