"""`liverctl bench`: liverctl against the notebook baseline, on the same files, in one run.

Every figure is a pair (liverctl, reference) measured in the same process tree, each the median of
`repeats` timed runs, and their ratio liverctl / reference. The reference is the notebook baseline
(`liverctl.bench.baseline`) except for two rows: ingest against the read-and-decompress floor, and
the full training pipeline against the model alone on tensors already in memory.

A liverctl part whose module is not there (yet) is reported as "not available: <module> missing"
with null values, so the rest of the table still stands.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.bench import baseline
from liverctl.bench.timing import Timing, ratio, time_interleaved
from liverctl.errors import LiverctlError

JSON_FORMAT = "liverctl-bench/1"
LIVER_LABELS = (1,)
LIVERCTL, BASELINE = "liverctl", "baseline"


# --------------------------------------------------------------------------------------------------
# settings and figures


@dataclass
class BenchSettings:
    """What to measure, and how much of it. `quick()` is the tiny run the test uses."""

    cases: int = 4
    size: int = 512
    slices: int = 64
    preset: str = "v5"
    workdir: Path = Path("bench-work")
    real: bool = True
    real_dir: Path | None = None
    repeats: int = 3
    loader_repeats: int = 5  # loader epochs are short and the most sensitive to a neighbour's load
    samples: int = 256  # 2.5D samples drawn per loader repeat
    loader_batch: int = 16  # v5's batch size
    train_batch: int = 2  # a CPU-sized batch; the GPU table uses the preset's
    train_steps: int = 2  # timed optimizer steps per repeat
    infer_slices: int = 4  # slices predicted per inference repeat
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_settings(cls, **overrides: Any) -> BenchSettings:
        base = cls(cases=2, size=64, slices=16, samples=32, loader_batch=4, train_batch=2, train_steps=1,
                   infer_slices=2, loader_repeats=3, quick=True)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self) -> None:
        if self.cases < 2:
            raise LiverctlError(f"--cases {self.cases}: need at least 2 (one to train on, one to hold out)")
        if self.size < 32 or self.size % 32:
            raise LiverctlError(f"--size {self.size}: must be a multiple of 32 (the U-Net's stride)")
        if self.slices < 3:
            raise LiverctlError(f"--slices {self.slices}: need at least 3 for a 2.5D stack")
        if self.repeats < 3:
            raise LiverctlError(f"repeats {self.repeats}: need at least 3 for a median")


@dataclass
class Figure:
    """One row of the table: liverctl against a reference, with their ratio (liverctl / reference)."""

    key: str
    what: str
    unit: str
    reference: str  # what the reference column is: "baseline", "floor", "model only"
    higher_is_better: bool
    liverctl: float | None = None
    baseline: float | None = None  # the reference's value, whatever `reference` names
    ratio: float | None = None
    target: str | None = None  # e.g. ">= 1.8" on the ratio
    target_met: bool | None = None
    note: str | None = None
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def settle(self, target_applies: bool = True) -> Figure:
        self.ratio = ratio(self.liverctl, self.baseline)
        if self.target and self.ratio is not None and target_applies:
            op, value = self.target.split()
            self.target_met = self.ratio >= float(value) if op == ">=" else self.ratio <= float(value)
        return self


@dataclass
class BenchReport:
    settings: BenchSettings
    figures: list[Figure]
    machine: dict
    started: str
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)  # diagnostics: where the time goes

    def to_json(self) -> dict:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.settings).items()}
        return {
            "format": JSON_FORMAT,
            "started": self.started,
            "seconds": self.seconds,
            "stage_seconds": self.stage_seconds,
            "profiles": self.profiles,
            "machine": self.machine,
            "settings": settings,
            "figures": {f.key: _figure_json(f) for f in self.figures},
        }


def _figure_json(fig: Figure) -> dict:
    out = asdict(fig)
    out.pop("key")
    for name in ("liverctl", "baseline", "ratio"):
        if out[name] is not None and not np.isfinite(out[name]):
            out[name] = None
    return out


class Unavailable(Exception):
    """A liverctl part could not be measured; the message goes into the figure's note."""


def _why(exc: BaseException) -> str:
    """The note of a figure whose liverctl side could not be measured."""
    if isinstance(exc, Unavailable):
        return str(exc)
    return f"failed: {type(exc).__name__}: {exc}".splitlines()[0]


def _missing(exc: ModuleNotFoundError) -> Unavailable:
    return Unavailable(f"not available: {exc.name} missing")


def _race(
    works: dict[str, Callable[[], Any]],
    repeats: int,
    *,
    setups: dict[str, Callable[[], Any]] | None = None,
    warmup: int = 0,
) -> tuple[dict[str, Timing], str | None]:
    """Time the parts in turns (`time_interleaved`). If the liverctl part fails, time the others alone
    and return why it failed, so the reference column still stands."""
    try:
        return time_interleaved(works, repeats, setups=setups, warmup=warmup), None
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        if LIVERCTL not in works:
            raise
        rest = {k: w for k, w in works.items() if k != LIVERCTL}
        return time_interleaved(rest, repeats, setups=setups, warmup=warmup), _why(exc)


# --------------------------------------------------------------------------------------------------
# the run


def run_bench(settings: BenchSettings, on_stage: Callable[[str], None] = lambda s: None) -> BenchReport:
    """Measure every figure (see the module docstring) and return the report; nothing is printed."""
    settings.validate()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    work = Path(settings.workdir)
    work.mkdir(parents=True, exist_ok=True)
    torch = _torch(settings)

    on_stage("synthetic dataset")
    data_dir = _synthetic_dataset(settings, work)
    cases = _train_cases(data_dir)
    ctx = _Context(settings=settings, work=work, data_dir=data_dir, cases=cases, torch=torch)

    figures: list[Figure] = []
    stage_seconds: dict[str, float] = {}
    for stage, measure in (
        ("ingest", _measure_ingest),
        ("loading", _measure_loading),
        ("training throughput", _measure_training),
        ("submit-side", _measure_submit),
        ("real CT", _measure_real),
    ):
        on_stage(stage)
        t_stage = time.perf_counter()
        figures.extend(measure(ctx))
        stage_seconds[stage] = round(time.perf_counter() - t_stage, 2)
    return BenchReport(settings=settings, figures=figures, machine=_machine(torch), started=started,
                       seconds=round(time.perf_counter() - t0, 1), stage_seconds=stage_seconds,
                       profiles=ctx.profiles)


@dataclass
class _Context:
    settings: BenchSettings
    work: Path
    data_dir: Path
    cases: list[tuple[str, Path, Path | None]]
    torch: Any
    store_path: Path | None = None  # the liverctl store once ingested
    cache_dir: Path | None = None  # the notebook cache once built
    cfg: dict | None = None
    profiles: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict:
        if self.cfg is None:
            try:
                from liverctl.config import resolve_config
            except ModuleNotFoundError as exc:
                raise _missing(exc) from None
            s = self.settings
            self.cfg = resolve_config(s.preset, [
                f"data.input_size={s.size}",
                f"data.num_workers={s.workers}",
                f"data.store={self.store_path}",
                "model.encoder_weights=none",
                f"train.batch_size={s.loader_batch}",
            ])
        return self.cfg


def _torch(settings: BenchSettings):
    import torch

    torch.manual_seed(settings.seed)
    return torch


def _machine(torch) -> dict:
    return {
        "cpus": os.cpu_count(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def _synthetic_dataset(settings: BenchSettings, work: Path) -> Path:
    """The synthetic dataset for these sizes, written once and reused (a marker file says it is whole)."""
    from liverctl.data.synth import write_synthetic_dataset

    out = work / f"data-c{settings.cases}-s{settings.size}-z{settings.slices}-seed{settings.seed}"
    marker = out / ".complete"
    if not marker.exists():
        shutil.rmtree(out, ignore_errors=True)
        write_synthetic_dataset(out, cases=settings.cases, test_cases=0, size=settings.size,
                                slices=settings.slices, seed=settings.seed)
        marker.write_text("written by liverctl bench\n")
    return out


def _train_cases(data_dir: Path) -> list[tuple[str, Path, Path | None]]:
    from liverctl.data.sources import find_cases

    layout = find_cases(data_dir)
    return [(c.case_id, c.volume, c.label) for c in layout.cases if c.split == "train"]


def tree_bytes(path: Path) -> int:
    """Apparent size of every file under `path` (the same measure for the store and the cache)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _fresh(path: Path) -> Callable[[], None]:
    def clear() -> None:
        shutil.rmtree(path, ignore_errors=True)

    return clear


# --------------------------------------------------------------------------------------------------
# 1. ingest


def read_floor(cases: list[tuple[str, Path, Path | None]]) -> int:
    """Read and decompress every source file once (volume and label), nothing else. Returns voxels read."""
    from liverctl.data.nifti import open_nifti

    voxels = 0
    for _, volume, label in cases:
        for path in (volume, label):
            if path is not None:
                voxels += np.asanyarray(open_nifti(path).dataobj).size
    return voxels


def _measure_ingest(ctx: _Context) -> list[Figure]:
    s = ctx.settings
    store_path = ctx.work / "store" / "liver.zarr"
    cache_dir = ctx.work / "npy-cache"
    ingest_fig = Figure("ingest_seconds", "ingest: wall seconds (liverctl ingest vs notebook cache build)",
                        "s", "baseline", higher_is_better=False, target="<= 1.0")
    floor_fig = Figure("ingest_vs_floor", "ingest: wall seconds vs read-and-decompress floor", "s", "floor",
                       higher_is_better=False, target="<= 1.3")
    bytes_fig = Figure("store_bytes", "bytes on disk (store vs .npy cache), synthetic", "bytes", "baseline",
                       higher_is_better=False, target="<= 0.6")

    works = {
        "floor": lambda: read_floor(ctx.cases),
        BASELINE: lambda: baseline.build_notebook_cache(ctx.cases, cache_dir, liver_labels=LIVER_LABELS),
        LIVERCTL: lambda: _liverctl_ingest(ctx.data_dir, store_path, s.workers),
    }
    timings, why = _race(works, s.repeats, setups={BASELINE: _fresh(cache_dir), LIVERCTL: _fresh(store_path)})
    ctx.cache_dir = cache_dir
    floor_fig.baseline, floor_fig.seconds["floor"] = timings["floor"].median, timings["floor"].seconds
    ingest_fig.baseline, ingest_fig.seconds[BASELINE] = timings[BASELINE].median, timings[BASELINE].seconds
    bytes_fig.baseline = float(tree_bytes(cache_dir))
    if why is None:
        ctx.store_path = store_path
        for fig in (ingest_fig, floor_fig):
            fig.liverctl, fig.seconds[LIVERCTL] = timings[LIVERCTL].median, timings[LIVERCTL].seconds
        bytes_fig.liverctl = float(tree_bytes(store_path))
    else:
        for fig in (ingest_fig, floor_fig, bytes_fig):
            fig.note = why
    return [ingest_fig.settle(), floor_fig.settle(), bytes_fig.settle()]


def _liverctl_ingest(data_dir: Path, store_path: Path, workers: int) -> Any:
    try:
        from liverctl.data.ingest import ingest_folder
    except ModuleNotFoundError as exc:
        raise _missing(exc) from None
    summary = ingest_folder(data_dir, store_path, workers=workers, liver_labels=LIVER_LABELS)
    if summary.failures:
        raise Unavailable(f"liverctl ingest failed: {summary.failures[0]}")
    return summary


# --------------------------------------------------------------------------------------------------
# 2. loading and 3. training throughput share one way of drawing the same samples on both sides


@dataclass
class _Samples:
    """The same 2.5D samples for both pipelines: store index rows and the matching cache rows."""

    store_rows: np.ndarray | None
    cache_rows: list[baseline.CacheRow]


def _pick_samples(ctx: _Context, count: int) -> _Samples:
    """`count` training slices drawn at random (seeded), as store rows and as cache rows."""
    rng = np.random.default_rng(ctx.settings.seed)
    by_key = {(r.case, r.z): r for r in baseline.load_cache_rows(ctx.cache_dir)}
    if ctx.store_path is None:
        keys = list(by_key)
        picks = rng.choice(len(keys), size=count, replace=count > len(keys))
        return _Samples(None, [by_key[keys[i]] for i in picks])
    index = _open_store(ctx.store_path).slice_index()
    train_rows = index.rows(split="train")
    store_rows = train_rows[rng.choice(len(train_rows), size=count, replace=count > len(train_rows))]
    cache_rows = [by_key[(index.case_id(r), int(index.z[r]))] for r in store_rows]
    return _Samples(store_rows, cache_rows)


def _open_store(path: Path):
    try:
        from liverctl.data.store import LiverStore
    except ModuleNotFoundError as exc:
        raise _missing(exc) from None
    return LiverStore.open(path)


def _liverctl_loader(ctx: _Context, cfg: dict, rows: np.ndarray | None, batch_size: int,
                     augment_on: str | None = None):
    """liverctl's training DataLoader over `rows` of the store, built as `train` builds it, and its
    dataset (whose `finish(batch, device)` is the training step's side of a batch). `augment_on`: "cpu"
    or "device"; None picks as `train` does (`data.augment_on` for this machine's device).

    One epoch of it is exactly `rows` (shuffled), so a timed epoch has no prefetched batches to throw away.
    """
    if ctx.store_path is None or rows is None:
        raise Unavailable("not available: liverctl.data.ingest missing (no store)")
    try:
        from liverctl.data.augment_device import resolve_augment_on
        from liverctl.data.dataset import EpochSampler, SliceDataset, make_train_loader, plan_loader
    except ModuleNotFoundError as exc:
        raise _missing(exc) from None
    from liverctl.config import in_channels

    store = _open_store(ctx.store_path)
    where = augment_on or resolve_augment_on(cfg, _device(ctx))
    dataset = SliceDataset(store, rows, cfg, train=True, augment_on=where)
    sampler = EpochSampler(dataset.liver, float(cfg["data"]["liver_oversample"]), int(cfg["train"]["seed"]))
    size = int(cfg["data"]["input_size"])
    batch_bytes = batch_size * (in_channels(cfg) + 1) * size * size * 2
    plan = plan_loader(int(cfg["data"]["num_workers"]), batch_bytes, ctx.torch.cuda.is_available())
    return make_train_loader(dataset, sampler, batch_size, plan), dataset


def _device(ctx: _Context) -> str:
    return "cuda" if ctx.torch.cuda.is_available() else "cpu"


def _epoch_samples(loader, finish: Callable[[Any], tuple] | None = None) -> int:
    """Run one epoch of a loader, each batch made ready for the model (`finish`: liverctl's cast /
    normalisation / device augmentation; the notebook's batches are ready as they come); returns how
    many samples came out."""
    seen = 0
    for batch in loader:
        image, _ = finish(batch) if finish is not None else batch
        seen += len(image)
    return seen


def _with_augment(cfg: dict, augment: bool) -> dict:
    return cfg if augment else {**cfg, "data": {**cfg["data"], "augment": "none"}}


def _baseline_dataset(ctx: _Context, rows: list[baseline.CacheRow], augment: bool):
    cfg = ctx.config()
    transform = baseline.notebook_transform(augment, float(cfg["data"]["rotate_limit"]), int(cfg["data"]["input_size"]))
    return baseline.NotebookSliceDataset(ctx.cache_dir, rows, transform)


def _measure_loading(ctx: _Context) -> list[Figure]:
    s = ctx.settings
    count = max(1, s.samples // s.loader_batch) * s.loader_batch
    figs = []
    try:
        samples = _pick_samples(ctx, count)
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        return [Figure(k, k, "samples/s", "baseline", True, note=_why(exc))
                for k in ("loader_augmented", "loader_read_only")]
    for augment in (True, False):
        key = "loader_augmented" if augment else "loader_read_only"
        what = (f"loading: 2.5D samples/s with {s.preset} augmentation (liverctl {s.workers} workers vs "
                f"notebook num_workers=0), {count} samples" if augment
                else f"loading: 2.5D samples/s without augmentation (read path), {count} samples")
        fig = Figure(key, what, "samples/s", "baseline", higher_is_better=True, target=">= 3")
        dataset = _baseline_dataset(ctx, samples.cache_rows, augment)
        base_loader = baseline.notebook_loader(dataset, s.loader_batch, s.seed)
        works = {BASELINE: lambda bl=base_loader: _epoch_samples(bl)}
        try:
            loader, mine = _liverctl_loader(ctx, _with_augment(ctx.config(), augment), samples.store_rows,
                                            s.loader_batch)
            works[LIVERCTL] = lambda ld=loader, ds=mine, dev=_device(ctx): _epoch_samples(
                ld, lambda b: ds.finish(b, dev))
        except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
            fig.note = _why(exc)
        # the warm-up round starts liverctl's persistent workers, as the first epoch of a run does
        timings, why = _race(works, max(s.repeats, s.loader_repeats), warmup=1)
        works.clear()  # let the loader's workers go
        fig.note = why or fig.note
        for side, t in timings.items():
            setattr(fig, side, t.rate(t.result))
            fig.seconds[side] = t.seconds
        figs.append(fig.settle())
    figs += _measure_loader_cpu(ctx, samples)
    try:
        ctx.profiles["loader_cpu_ms_per_sample"] = loader_breakdown(ctx, samples)
    except Exception as exc:  # noqa: BLE001 - a diagnostic, never worth the run
        ctx.profiles["loader_cpu_ms_per_sample"] = {"error": _why(exc)}
    return figs


WORKER_BUDGET_S = 0.0025  # issue 12: worker CPU per sample when augmentation runs on the device


@contextlib.contextmanager
def _one_thread(torch):
    """As in a DataLoader worker (`liverctl.data.dataset._worker_init`): one torch thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cpu_per_sample(works: dict[str, Callable[[], int]], repeats: int) -> dict[str, list[float]]:
    """CPU seconds per sample of each part (each returns its sample count), in turns, `repeats` times
    after one warm-up round, in this process with one torch thread (as a worker runs)."""
    out: dict[str, list[float]] = {name: [] for name in works}
    for round_ in range(repeats + 1):
        for name, work in works.items():
            start = time.process_time()
            count = work()
            if round_:
                out[name].append((time.process_time() - start) / count)
    return out


def _measure_loader_cpu(ctx: _Context, samples: _Samples) -> list[Figure]:
    """The worker's CPU per sample, both augmentation paths: what decides whether a GPU waits on few cores.

    cpu path (albumentations): read + decode, normalise, augment, resize and the batch itself
    (`SliceDataset.batch`, which replaces collation), against the notebook's `__getitem__` + collate.
    device path: the same worker reading the stored float16 into its batch, against the 2.5 ms budget.
    """
    import torch.utils.data

    s = ctx.settings
    torch = ctx.torch
    cpu_fig = Figure("loader_cpu_per_sample",
                     f"loading: worker CPU per sample, {s.preset} augmentation on the CPU (read, decode, "
                     "normalise, augment, batch) vs notebook (__getitem__ + collate), one thread",
                     "s", "baseline", higher_is_better=False, target="<= 0.5")
    dev_fig = Figure("loader_worker_cpu_device",
                     "loading: worker CPU per sample when augmentation runs on the device (read, decode, "
                     "batch) vs the 2.5 ms budget, one thread", "s", "2.5 ms budget", higher_is_better=False,
                     target="<= 1.0", baseline=WORKER_BUDGET_S)
    cfg = ctx.config()
    n = max(1, min(len(samples.cache_rows), 4 * s.loader_batch))
    base_ds = _baseline_dataset(ctx, samples.cache_rows[:n], True)

    def notebook_part() -> int:
        items = [base_ds[i] for i in range(n)]
        for b in range(0, n, s.loader_batch):
            torch.utils.data.default_collate(items[b:b + s.loader_batch])
        return n

    works: dict[str, Callable[[], int]] = {BASELINE: notebook_part}
    try:
        if ctx.store_path is None or samples.store_rows is None:
            raise Unavailable("not available: liverctl.data.ingest missing (no store)")
        from liverctl.data.dataset import SliceDataset

        store = _open_store(ctx.store_path)
        rows = samples.store_rows[:n]
        paths = {where: SliceDataset(store, rows, cfg, train=True, augment_on=where) for where in ("cpu", "device")}
        items = [(i, i) for i in range(n)]

        def batches(ds) -> int:
            for b in range(0, n, s.loader_batch):
                ds.batch(items[b:b + s.loader_batch])
            return n

        works[LIVERCTL] = lambda: batches(paths["cpu"])
        works["device path"] = lambda: batches(paths["device"])
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        cpu_fig.note = dev_fig.note = _why(exc)
    with _one_thread(torch):
        try:
            per = _cpu_per_sample(works, max(s.repeats, 3))
        except Exception as exc:  # noqa: BLE001
            cpu_fig.note = dev_fig.note = _why(exc)
            per = _cpu_per_sample({BASELINE: notebook_part}, max(s.repeats, 3))
    median = {k: float(np.median(v)) for k, v in per.items()}
    cpu_fig.baseline, cpu_fig.seconds[BASELINE] = median[BASELINE], per[BASELINE]
    if LIVERCTL in per:
        cpu_fig.liverctl, cpu_fig.seconds[LIVERCTL] = median[LIVERCTL], per[LIVERCTL]
        dev_fig.liverctl, dev_fig.seconds[LIVERCTL] = median["device path"], per["device path"]
    return [cpu_fig.settle(), dev_fig.settle()]


def loader_breakdown(ctx: _Context, samples: _Samples, n: int = 32) -> dict[str, dict[str, float]]:
    """Where a loader's time goes: CPU milliseconds per sample of each step, in one process, one thread.

    liverctl: chunk reads + decode into float16 (`read_stack`), label read, normalise + augment
    (`augment_sample`, the cpu path), a whole batch on the cpu path and on the device path (per sample;
    the batch replaces collation), and the step's side of a batch here on the CPU (`finish`: cast and
    normalise; + the batched augmentation on the device path). Baseline: the three `np.load`s with the
    stack and float32 cast, augmentation + ToTensorV2, `__getitem__`, collation.
    """
    import torch.utils.data

    from liverctl.data.dataset import SliceDataset, augment_sample

    s = ctx.settings
    clock = time.process_time

    def per_sample(fn, items) -> float:
        start = clock()
        for item in items:
            fn(item)
        return (clock() - start) / len(items) * 1000

    cfg = ctx.config()
    store = _open_store(ctx.store_path)
    rows = samples.store_rows[:n]
    cpu = SliceDataset(store, rows, cfg, train=True, augment_on="cpu")
    dev = SliceDataset(store, rows, cfg, train=True, augment_on="device")
    index = store.slice_index()
    keys = [(index.case_id(r), int(index.z[r])) for r in rows]
    stacks = [store.read_stack(k[0], k[1], dtype=np.float16) for k in keys]
    labels = [store.read_label_slice(k[0], k[1]) for k in keys]
    norm = cpu.ranges[int(cpu.case_codes[0])]
    b = min(s.loader_batch, len(rows))
    items = [(i, i) for i in range(b)]
    cpu_batch, dev_batch = cpu.batch(items), dev.batch(items)
    with _one_thread(ctx.torch):
        mine = {
            "chunk reads + decode (read_stack, float16)": per_sample(
                lambda k: store.read_stack(k[0], k[1], dtype=np.float16), keys),
            "label read": per_sample(lambda k: store.read_label_slice(k[0], k[1]), keys),
            "normalise + augment (cpu path)": per_sample(
                lambda i: augment_sample(stacks[i], labels[i], norm, cpu.augment, i), range(len(keys))),
            "batch, cpu path (per sample)": per_sample(lambda _: cpu.batch(items), [0] * 3) / b,
            "batch, device path (per sample)": per_sample(lambda _: dev.batch(items), [0] * 3) / b,
            "step side on this CPU, cpu path (per sample)": per_sample(
                lambda _: cpu.finish(cpu_batch, "cpu"), [0] * 3) / b,
            "step side on this CPU, device path (per sample)": per_sample(
                lambda _: dev.finish(dev_batch, "cpu"), [0] * 3) / b,
        }
    base_ds = _baseline_dataset(ctx, samples.cache_rows[:n], True)
    base_rows = samples.cache_rows[:n]
    base_items = [base_ds[i] for i in range(min(s.loader_batch, len(base_rows)))]
    images = [baseline.read_cache_window(ctx.cache_dir, r).transpose(1, 2, 0) for r in base_rows]
    with _one_thread(ctx.torch):
        theirs = {
            "3x np.load + stack + float32": per_sample(
                lambda r: baseline.read_cache_window(ctx.cache_dir, r), base_rows),
            "augmentation + ToTensorV2": per_sample(
                lambda i: base_ds.transform(image=images[i], mask=np.zeros(images[i].shape[:2], np.float32)),
                list(range(len(base_rows)))),
            "__getitem__ total": per_sample(lambda i: base_ds[i], list(range(len(base_rows)))),
            "collate (per sample)": per_sample(lambda _: torch.utils.data.default_collate(base_items), [0] * 5)
            / len(base_items),
        }
    return {LIVERCTL: {k: round(v, 3) for k, v in mine.items()}, BASELINE: {k: round(v, 3) for k, v in theirs.items()}}


def _train_step_fn(ctx: _Context):
    """One optimizer step of the preset's model and loss, as the trainer takes it: mixed precision as
    `train.amp` resolves on this device (off on a CPU), loss in float32 outside autocast, gradient
    clipping. Returns (step(image, mask), device, precision mode)."""
    torch = ctx.torch
    try:
        from liverctl.device import resolve_precision
        from liverctl.train.losses import build_loss
        from liverctl.train.models import build_model
    except ModuleNotFoundError as exc:
        raise _missing(exc) from None
    cfg = ctx.config()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(cfg["train"]["amp"], torch.device(device))
    model = build_model(cfg, pretrained=False).to(device).train()
    loss_fn = build_loss(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["optim"]["lr"])
    scaler = torch.amp.GradScaler(device, enabled=precision.needs_scaler)
    clip = float(cfg["optim"]["grad_clip"])

    def step(image, mask) -> None:
        image, mask = image.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast_context(device):
            logits = model(image)
        loss = loss_fn(logits.float(), mask)
        scaler.scale(loss).backward()
        if clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        if device == "cuda":
            torch.cuda.synchronize()

    return step, device, precision.mode


def _model_only(step, image, mask, steps: int) -> int:
    """`steps` optimizer steps on one batch already in memory; returns the number of images."""
    for _ in range(steps):
        step(image, mask)
    return steps * len(image)


def _train_epoch(step, loader, finish: Callable[[Any], tuple] | None = None) -> int:
    """Train on one epoch of `loader` (liverctl's batches through `finish` first, as the trainer does);
    returns the number of images."""
    seen = 0
    for batch in loader:
        image, mask = finish(batch) if finish is not None else batch
        step(image, mask)
        seen += len(image)
    return seen


def _measure_training(ctx: _Context) -> list[Figure]:
    s = ctx.settings
    torch = ctx.torch
    vs_model = Figure("train_pipeline_vs_model",
                      f"training: images/s, full pipeline from the store vs model only ({s.preset}, "
                      f"{s.size}x{s.size}; batch {s.train_batch} x {s.train_steps} steps on a CPU, "
                      f"batch {s.loader_batch} with AMP on a GPU)", "images/s",
                      "model only", higher_is_better=True, target=">= 0.9")
    vs_base = Figure("train_pipeline_vs_baseline",
                     "training: images/s, full pipeline, liverctl loader vs notebook loader", "images/s",
                     "baseline", higher_is_better=True)
    try:
        step, device, precision = _train_step_fn(ctx)
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        vs_model.note = vs_base.note = _why(exc)
        return [vs_model, vs_base]
    # A CPU-sized batch here; on a GPU the preset's own batch and enough steps to be worth timing.
    batch, steps = (s.train_batch, s.train_steps) if device == "cpu" else (s.loader_batch, max(s.train_steps, 10))
    count = steps * batch
    image = torch.rand(batch, 3, s.size, s.size)
    mask = (torch.rand(batch, 1, s.size, s.size) > 0.7).float()
    samples = _pick_samples(ctx, count)
    base_loader = baseline.notebook_loader(_baseline_dataset(ctx, samples.cache_rows, True), batch, s.seed)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    works = {
        "model only": lambda: _model_only(step, image, mask, steps),
        BASELINE: lambda: _train_epoch(step, base_loader),
    }
    try:
        loader, mine = _liverctl_loader(ctx, ctx.config(), samples.store_rows, batch)
        works[LIVERCTL] = lambda ld=loader, ds=mine: _train_epoch(step, ld, lambda b: ds.finish(b, device))
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        vs_model.note = vs_base.note = _why(exc)
    # warm-up round: allocator and autotuning, liverctl's persistent workers
    timings, why = _race(works, s.repeats, warmup=1)
    works.clear()
    ctx.profiles["training"] = {
        "device": device, "precision": precision, "batch": batch, "steps_per_repeat": steps,
        "gpu_peak_memory_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
    }
    if why:
        vs_model.note = vs_base.note = why
    vs_model.baseline, vs_model.seconds["model only"] = timings["model only"].rate(count), timings["model only"].seconds
    vs_base.baseline, vs_base.seconds[BASELINE] = timings[BASELINE].rate(count), timings[BASELINE].seconds
    if LIVERCTL in timings:
        vs_model.liverctl = vs_base.liverctl = timings[LIVERCTL].rate(count)
        vs_model.seconds[LIVERCTL] = vs_base.seconds[LIVERCTL] = timings[LIVERCTL].seconds
        if device != "cuda":
            vs_model.note = ("the 0.9 target is for a GPU; on a CPU the model and the loader workers share "
                             "the same cores")
    return [vs_model.settle(target_applies=torch.cuda.is_available()), vs_base.settle()]


# --------------------------------------------------------------------------------------------------
# 4. submit-side


def _noisy_mask(label: np.ndarray, seed: int) -> np.ndarray:
    """A prediction-like mask: the label plus scattered false-positive blobs (many components)."""
    rng = np.random.default_rng(seed)
    mask = label.astype(bool).copy()
    x, y, z = mask.shape
    r = max(1, x // 64)
    for _ in range(max(20, z)):
        cx, cy, cz = rng.integers(0, x - r), rng.integers(0, y - r), rng.integers(0, z)
        mask[cx:cx + r, cy:cy + r, cz:cz + 1] = True
    return mask


def _measure_submit(ctx: _Context) -> list[Figure]:
    from liverctl.data.nifti import open_nifti

    s = ctx.settings
    case_id, volume_path, label_path = ctx.cases[0]
    label = np.asanyarray(open_nifti(label_path).dataobj)
    mask = _noisy_mask(np.isin(label, LIVER_LABELS), s.seed)
    shape = "x".join(map(str, mask.shape))

    post = Figure("postprocess_seconds", f"submit: largest-component clean-up of one {shape} mask "
                  "(liverctl postprocess vs scipy.ndimage)", "s", "baseline", higher_is_better=False)
    _race_into(post, {BASELINE: lambda: baseline.notebook_largest_component(mask),
                      LIVERCTL: lambda: _liverctl_postprocess(mask)}, s.repeats)

    rle = Figure("rle_seconds", f"submit: run-length encoding of all {mask.shape[-1]} slices",
                 "s", "baseline", higher_is_better=False)
    _race_into(rle, {BASELINE: lambda: [baseline.notebook_rle(mask[..., z]) for z in range(mask.shape[-1])],
                     LIVERCTL: lambda: _liverctl_rle(mask)}, s.repeats)

    infer = Figure("inference_seconds_per_slice",
                   f"submit: inference seconds per slice ({s.preset}, {s.size}x{s.size}, hflip TTA; "
                   "liverctl vs notebook one slice at a time)", "s/slice", "baseline",
                   higher_is_better=False, target="<= 1.0")
    try:
        _measure_inference(ctx, infer, volume_path, case_id)
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        infer.note = _why(exc)
    return [post.settle(), rle.settle(), infer.settle()]


def _liverctl_postprocess(mask: np.ndarray) -> np.ndarray:
    try:
        from liverctl.infer.postprocess import parse_postprocess
    except ModuleNotFoundError as exc:
        raise _missing(exc) from None
    return parse_postprocess("largest")(mask)


def _liverctl_rle(mask: np.ndarray) -> list[str]:
    try:
        from liverctl.infer.rle import encode_volume
    except ModuleNotFoundError as exc:
        raise _missing(exc) from None
    return encode_volume(mask)


def _measure_inference(ctx: _Context, fig: Figure, volume_path: Path, case_id: str) -> None:
    from liverctl.data.nifti import open_nifti

    torch = ctx.torch
    s = ctx.settings
    try:
        from liverctl.train.models import build_model
    except ModuleNotFoundError as exc:
        raise _missing(exc) from None
    cfg = ctx.config()
    model = build_model(cfg, pretrained=False).eval()
    volume = baseline.window_to_unit(np.asanyarray(open_nifti(volume_path).dataobj),
                                     tuple(cfg["data"]["window"]))
    depth = volume.shape[-1]
    n = min(s.infer_slices, depth)
    z0 = (depth - n) // 2
    zs = list(range(z0, z0 + n))
    works = {BASELINE: lambda: baseline.notebook_predict_slices(model, volume, zs)}
    try:
        works[LIVERCTL] = _liverctl_predict_fn(ctx, model, cfg, case_id, z0, n)
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        fig.note = _why(exc)
    with torch.inference_mode():
        _race_into(fig, works, s.repeats, warmup=1, per=n)


def _liverctl_predict_fn(ctx: _Context, model, cfg: dict, case_id: str, z0: int, n: int) -> Callable[[], Any]:
    """liverctl's prediction of slices z0 .. z0 + n - 1 of a store case (hflip TTA, batched)."""
    if ctx.store_path is None:
        raise Unavailable("not available: liverctl.data.ingest missing (no store)")
    try:
        from liverctl.infer.predict import RunModel, predict_case_probabilities
    except ModuleNotFoundError as exc:
        raise _missing(exc) from None
    store = _open_store(ctx.store_path)
    # predict reads each case once (read_case_volume) and then works from memory; time the same
    window = store_volume(store, case_id)[..., z0:z0 + n]
    stats = store.meta(case_id).get("stats") or {}
    run = RunModel(run_dir=ctx.work, model=model, cfg=cfg)
    return lambda: predict_case_probabilities(run, window, stats, tta=cfg["infer"]["tta"],
                                              batch_size=int(cfg["infer"]["batch_size"]), amp="off")


def _race_into(fig: Figure, works: dict[str, Callable[[], Any]], repeats: int, *, warmup: int = 0,
               per: int = 1) -> None:
    """Time `works` in turns and put each side's median seconds (divided by `per`) into `fig`."""
    timings, why = _race(works, repeats, warmup=warmup)
    fig.note = why or fig.note
    for side, t in timings.items():
        setattr(fig, side, t.median / per)
        fig.seconds[side] = t.seconds


def store_volume(store, case_id: str) -> np.ndarray:
    """A store case's whole image as `liverctl.infer.predict` reads it. Shape: float16 (X, Y, Z)."""
    from liverctl.infer.predict import read_case_volume

    return read_case_volume(store, case_id)


# --------------------------------------------------------------------------------------------------
# real CT


def find_real_dir(explicit: Path | None = None) -> Path | None:
    """The folder of real CT samples: `explicit`, $LIVERCTL_REAL_DATA, or ../shared/data/real."""
    candidates = [explicit] if explicit is not None else []
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


def _measure_real(ctx: _Context) -> list[Figure]:
    s = ctx.settings
    size_fig = Figure("real_store_bytes", "real CT: bytes on disk (store vs .npy cache)", "bytes", "baseline",
                      higher_is_better=False, target="<= 0.6")
    read_fig = Figure("real_window_reads", "real CT: random 3-slice window reads/s, one process",
                      "windows/s", "baseline", higher_is_better=True)
    real_dir = find_real_dir(s.real_dir)
    if not s.real:
        size_fig.note = read_fig.note = "skipped: --no-real"
        return [size_fig, read_fig]
    if real_dir is None:
        size_fig.note = read_fig.note = "not available: real CT folder not found (set LIVERCTL_REAL_DATA)"
        return [size_fig, read_fig]
    staged = ctx.work / "real-data"
    cases = _real_layout(real_dir, staged)
    cache_dir = ctx.work / "real-npy-cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    rows = baseline.build_notebook_cache(cases, cache_dir, liver_labels=LIVER_LABELS)
    size_fig.baseline = float(tree_bytes(cache_dir))
    rng = random.Random(s.seed)
    picks = [rows[rng.randrange(len(rows))] for _ in range(max(256, s.samples))]
    works = {BASELINE: lambda: [baseline.read_cache_window(cache_dir, r) for r in picks]}
    notes = [f"{len(cases)} cases: {', '.join(c[0] for c in cases)}"]
    try:
        store_path = ctx.work / "real-store" / "liver.zarr"
        shutil.rmtree(store_path, ignore_errors=True)
        _liverctl_ingest(staged, store_path, s.workers)
        size_fig.liverctl = float(tree_bytes(store_path))
        store = _open_store(store_path)
        ids = {c: c for c in store.case_ids()}
        store_picks = [(_store_id(ids, r.case), r.z) for r in picks]
        store.read_stack(*store_picks[0])  # open the arrays once, as a worker would
        works[LIVERCTL] = lambda: [store.read_stack(c, z) for c, z in store_picks]
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        notes.insert(0, _why(exc))
    timings, why = _race(works, s.repeats)
    if why:
        notes.insert(0, why)
    for side, t in timings.items():
        setattr(read_fig, side, t.rate(len(picks)))
        read_fig.seconds[side] = t.seconds
    size_fig.note = read_fig.note = "; ".join(notes)
    return [size_fig.settle(), read_fig.settle()]


def _store_id(ids: dict[str, str], name: str) -> str:
    if name in ids:
        return name
    for candidate in ids:
        if candidate.endswith(name) or name.endswith(candidate):
            return candidate
    raise Unavailable(f"not available: case {name} not found in the real-CT store")


# --------------------------------------------------------------------------------------------------
# output


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "bytes":
        return f"{value / 1e6:,.1f} MB"
    if unit in ("s", "s/slice"):
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:,.1f}"


# Short names for the printed table; the JSON and BENCHMARKS.md carry the full `what`.
TABLE_LABELS = {
    "ingest_seconds": "ingest vs notebook cache build",
    "ingest_vs_floor": "ingest vs read-and-decompress floor",
    "store_bytes": "bytes on disk, synthetic",
    "loader_augmented": "loader samples/s, augmented",
    "loader_read_only": "loader samples/s, no augmentation",
    "loader_cpu_per_sample": "worker CPU per sample, augmented on CPU",
    "loader_worker_cpu_device": "worker CPU per sample, augmented on device",
    "train_pipeline_vs_model": "training images/s: pipeline vs model only",
    "train_pipeline_vs_baseline": "training images/s: pipeline vs notebook",
    "postprocess_seconds": "largest-component clean-up",
    "rle_seconds": "RLE of every slice",
    "inference_seconds_per_slice": "inference per slice",
    "real_store_bytes": "bytes on disk, real CT",
    "real_window_reads": "window reads/s, real CT",
}
TABLE_HEADER = ["figure", "liverctl", "reference", "ratio", "target"]


def table_rows(report: BenchReport, long_names: bool = False) -> list[list[str]]:
    """One row per figure: figure, liverctl, reference, ratio (liverctl / reference), target."""
    rows = []
    for f in report.figures:
        name = f.what if long_names else TABLE_LABELS.get(f.key, f.what)
        unit = "" if f.unit in ("bytes", "s", "s/slice") else f" {f.unit}"
        mine = _fmt(f.liverctl, f.unit) + unit if f.liverctl is not None else "n/a"
        ref = _fmt(f.baseline, f.unit) + unit if f.baseline is not None else "n/a"
        ratio_text = f"{f.ratio:.2f}x" if f.ratio is not None else "n/a"
        target = "" if not f.target else f"{f.target}: " + (
            "met" if f.target_met else "MISSED" if f.target_met is False else "not judged")
        rows.append([name, mine, f"{ref} ({f.reference})", ratio_text, target])
    return rows


def table_notes(report: BenchReport) -> list[str]:
    """`figure: note` for every figure that has one (why a value is missing, what a target means here)."""
    return [f"{TABLE_LABELS.get(f.key, f.key)}: {f.note}" for f in report.figures if f.note]


def report_markdown(report: BenchReport) -> str:
    """The table as Markdown (full figure descriptions) followed by the notes."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table_rows(report, True)]
    notes = table_notes(report)
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def report_from_json(data: dict) -> BenchReport:
    """A report read back from the JSON that `write_json` wrote (e.g. to render it as Markdown)."""
    if data.get("format") != JSON_FORMAT:
        raise LiverctlError(f"not a liverctl bench report (format {data.get('format')!r}, expected {JSON_FORMAT!r})")
    settings = dict(data["settings"])
    settings["workdir"] = Path(settings["workdir"])
    settings["real_dir"] = Path(settings["real_dir"]) if settings.get("real_dir") else None
    figures = [Figure(key=key, **fig) for key, fig in data["figures"].items()]
    return BenchReport(settings=BenchSettings(**settings), figures=figures, machine=data["machine"],
                       started=data["started"], seconds=data["seconds"], stage_seconds=data.get("stage_seconds", {}),
                       profiles=data.get("profiles", {}))


def write_json(report: BenchReport, path: Path) -> None:
    """Write the report atomically (`liverctl.files.write_atomic`)."""
    from liverctl.files import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n", what="the bench figures")
