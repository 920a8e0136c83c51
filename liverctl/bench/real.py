"""Bench part "real": store size and random 3-slice window reads on the real CT samples (when present)."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from liverctl.bench import baseline
from liverctl.bench.context import BASELINE, LIVER_LABELS, LIVERCTL, Context, Unavailable, race, why
from liverctl.bench.ingest import liverctl_ingest, tree_bytes
from liverctl.bench.report import Figure
from liverctl.plural import plural


def find_real_dir(explicit: Path | None = None) -> Path | None:
    """The folder of real CT samples: `explicit` (never another in its place), else $LIVERCTL_REAL_DATA or
    ../shared/data/real."""
    if explicit is not None:
        return explicit if explicit.is_dir() else None
    candidates = []
    if os.environ.get("LIVERCTL_REAL_DATA"):
        candidates.append(Path(os.environ["LIVERCTL_REAL_DATA"]))
    repo = Path(__file__).resolve().parents[2]
    candidates += [Path.cwd().parent / "shared" / "data" / "real", repo.parent / "shared" / "data" / "real"]
    return next((c for c in candidates if c.is_dir()), None)


def _real_layout(real_dir: Path, out: Path) -> list[tuple[str, Path, Path | None]]:
    """Each `<name>/ct.nii.gz` (+ `liver.nii.gz` or `label.nii.gz`) linked into the competition layout."""
    shutil.rmtree(out, ignore_errors=True)
    (out / "train" / "volume").mkdir(parents=True)
    (out / "train" / "segmentation").mkdir(parents=True)
    cases = []
    for folder in sorted(p for p in real_dir.iterdir() if p.is_dir()):
        ct = folder / "ct.nii.gz"
        label = next((folder / n for n in ("liver.nii.gz", "label.nii.gz") if (folder / n).is_file()), None)
        if not ct.is_file() or label is None:
            continue
        vol_link = out / "train" / "volume" / f"volume-{folder.name}.nii.gz"
        seg_link = out / "train" / "segmentation" / f"segmentation-{folder.name}.nii.gz"
        vol_link.symlink_to(ct.resolve())
        seg_link.symlink_to(label.resolve())
        cases.append((folder.name, vol_link, seg_link))
    return cases


def _figures() -> tuple[Figure, Figure]:
    size_fig = Figure("real_store_bytes", "real CT: bytes on disk (store vs .npy cache)", "bytes", "baseline",
                      higher_is_better=False, target="<= 0.6")
    read_fig = Figure("real_window_reads", "real CT: random 3-slice window reads/s, one process",
                      "windows/s", "baseline", higher_is_better=True)
    return size_fig, read_fig


def measure_real(ctx: Context) -> list[Figure]:
    s = ctx.settings
    size_fig, read_fig = _figures()
    real_dir = find_real_dir(s.real_dir)
    if not s.real or real_dir is None:
        size_fig.note = read_fig.note = ("skipped: --no-real" if not s.real else
                                         "not available: real CT folder not found (set LIVERCTL_REAL_DATA)")
        return [size_fig.settle(size_fig.note), read_fig]
    staged = ctx.work / "real-data"
    cases = _real_layout(real_dir, staged)
    if not cases:
        size_fig.note = read_fig.note = (f"not available: no case in {real_dir} (a folder per case with ct.nii.gz "
                                         "and liver.nii.gz or label.nii.gz)")
        return [size_fig.settle(size_fig.note), read_fig]
    cache_dir = ctx.work / "real-npy-cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    rows = baseline.build_notebook_cache(cases, cache_dir, liver_labels=LIVER_LABELS)
    size_fig.baseline = float(tree_bytes(cache_dir))
    rng = random.Random(s.seed)
    picks = [rows[rng.randrange(len(rows))] for _ in range(max(256, s.samples))]
    works = {BASELINE: lambda: [baseline.read_cache_window(cache_dir, r) for r in picks]}
    notes = [f"{plural(len(cases), 'case')}: {', '.join(c[0] for c in cases)}"]
    try:
        works[LIVERCTL] = _liverctl_reads(ctx, staged, size_fig, picks)
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        notes.insert(0, why(exc))
    timings, failed = race(works, s.repeats)
    if failed:
        notes.insert(0, failed)
    for side, t in timings.items():
        setattr(read_fig, side, t.rate(len(picks)))
        read_fig.seconds[side] = t.seconds
    size_fig.note = read_fig.note = "; ".join(notes)
    return [size_fig.settle(), read_fig.settle()]


def _liverctl_reads(ctx: Context, staged: Path, size_fig: Figure, picks: list):
    """Ingest the staged real cases (their size into `size_fig`) and return the timed window reads."""
    from liverctl.data.store import LiverStore

    store_path = ctx.work / "real-store" / "liver.zarr"
    shutil.rmtree(store_path, ignore_errors=True)
    liverctl_ingest(staged, store_path, ctx.settings.workers)
    size_fig.liverctl = float(tree_bytes(store_path))
    store = LiverStore.open(store_path)
    ids = list(store.case_ids())
    store_picks = [(_store_id(ids, r.case), r.z) for r in picks]
    store.read_stack(*store_picks[0])  # open the arrays once, as a worker would
    return lambda: [store.read_stack(c, z) for c, z in store_picks]


def _store_id(ids: list[str], name: str) -> str:
    if name in ids:
        return name
    for candidate in ids:
        if candidate.endswith(name) or name.endswith(candidate):
            return candidate
    raise Unavailable(f"not available: case {name} not found in the real-CT store")
