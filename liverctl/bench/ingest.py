"""Bench part "ingest": liverctl ingest against the notebook's cache build and the read-and-decompress
floor, and the bytes each leaves on disk. Also builds the store and the cache the other parts read."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.bench import baseline
from liverctl.bench.context import BASELINE, LIVER_LABELS, LIVERCTL, Context, Unavailable, race
from liverctl.bench.report import Figure


def tree_bytes(path: Path) -> int:
    """Apparent size of every file under `path` (the same measure for the store and the cache)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def read_floor(cases: list[tuple[str, Path, Path | None]]) -> int:
    """Read and decompress every source file once (volume and label), nothing else. Returns voxels read."""
    from liverctl.data.nifti import open_nifti

    voxels = 0
    for _, volume, label in cases:
        for path in (volume, label):
            if path is not None:
                voxels += np.asanyarray(open_nifti(path).dataobj).size
    return voxels


def liverctl_ingest(data_dir: Path, store_path: Path, workers: int) -> Any:
    from liverctl.data.ingest import ingest_folder

    summary = ingest_folder(data_dir, store_path, workers=workers, liver_labels=LIVER_LABELS)
    if summary.failures:
        raise Unavailable(f"liverctl ingest failed: {summary.failures[0]}")
    return summary


def _paths(ctx: Context) -> tuple[Path, Path]:
    return ctx.work / "store" / "liver.zarr", ctx.work / "npy-cache"


def _fresh(path: Path) -> Callable[[], None]:
    def clear() -> None:
        shutil.rmtree(path, ignore_errors=True)

    return clear


def prepare_store(ctx: Context) -> None:
    """The store and the notebook cache, built once and untimed (when the ingest part is not run)."""
    store_path, cache_dir = _paths(ctx)
    _fresh(cache_dir)()
    baseline.build_notebook_cache(ctx.cases, cache_dir, liver_labels=LIVER_LABELS)
    ctx.cache_dir = cache_dir
    _fresh(store_path)()
    liverctl_ingest(ctx.data_dir, store_path, ctx.settings.workers)
    ctx.store_path = store_path


def measure_ingest(ctx: Context) -> list[Figure]:
    s = ctx.settings
    store_path, cache_dir = _paths(ctx)
    ingest_fig = Figure("ingest_seconds", "ingest: wall seconds (liverctl ingest vs notebook cache build)",
                        "s", "baseline", higher_is_better=False, target="<= 1.0")
    floor_fig = Figure("ingest_vs_floor", "ingest: wall seconds vs read-and-decompress floor", "s", "floor",
                       higher_is_better=False, target="<= 1.3")
    bytes_fig = Figure("store_bytes", "bytes on disk (store vs .npy cache), synthetic", "bytes", "baseline",
                       higher_is_better=False, target="<= 0.6")

    works = {
        "floor": lambda: read_floor(ctx.cases),
        BASELINE: lambda: baseline.build_notebook_cache(ctx.cases, cache_dir, liver_labels=LIVER_LABELS),
        LIVERCTL: lambda: liverctl_ingest(ctx.data_dir, store_path, s.workers),
    }
    timings, failed = race(works, s.repeats, setups={BASELINE: _fresh(cache_dir), LIVERCTL: _fresh(store_path)})
    ctx.cache_dir = cache_dir
    floor_fig.baseline, floor_fig.seconds["floor"] = timings["floor"].median, timings["floor"].seconds
    ingest_fig.baseline, ingest_fig.seconds[BASELINE] = timings[BASELINE].median, timings[BASELINE].seconds
    bytes_fig.baseline = float(tree_bytes(cache_dir))
    if failed is None:
        ctx.store_path = store_path
        for fig in (ingest_fig, floor_fig):
            fig.liverctl, fig.seconds[LIVERCTL] = timings[LIVERCTL].median, timings[LIVERCTL].seconds
        bytes_fig.liverctl = float(tree_bytes(store_path))
    else:
        for fig in (ingest_fig, floor_fig, bytes_fig):
            fig.note = failed
    return [ingest_fig.settle(), floor_fig.settle(), bytes_fig.settle()]
