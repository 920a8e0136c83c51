"""Bench part "loader": liverctl's training loader against the notebook's (samples/s on this machine's
cores, augmented and read path), the worker CPU per sample on both augmentation paths, and where that
CPU goes (`loader_breakdown`, a diagnostic in the JSON's profiles)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from liverctl.bench.context import (
    BASELINE,
    LIVERCTL,
    Context,
    Samples,
    Unavailable,
    baseline_dataset,
    pick_samples,
    race,
    why,
)
from liverctl.bench.report import Figure
from liverctl.data.handover import default_freed_memory, reuse_freed_memory

WORKER_BUDGET_S = 0.0025  # issue 12: worker CPU per sample when augmentation runs on the device


def liverctl_loader(ctx: Context, cfg: dict, rows: np.ndarray | None, batch_size: int):
    """liverctl's training DataLoader over `rows` of the store, built as `train` builds it, and its
    dataset (whose `finish(batch, device)` is the training step's side of a batch). The augmentation
    path is the one `train` picks (`data.augment_on` for this machine's device).

    One epoch of it is exactly `rows` (shuffled), so a timed epoch has no prefetched batches to throw away.
    """
    from liverctl.data.augment_device import resolve_augment_on
    from liverctl.data.dataset import EpochSampler, SliceDataset
    from liverctl.data.loaders import make_train_loader, plan_loader

    if rows is None:
        raise Unavailable("not available: no store (liverctl ingest failed)")
    store = ctx.store()
    where = resolve_augment_on(cfg, ctx.device)
    dataset = SliceDataset(store, rows, cfg, train=True, augment_on=where, device=ctx.device)
    sampler = EpochSampler(dataset.liver, float(cfg["data"]["liver_oversample"]), int(cfg["train"]["seed"]))
    plan = plan_loader(int(cfg["data"]["num_workers"]), dataset.batch_bytes(batch_size), ctx.torch.cuda.is_available())
    return make_train_loader(dataset, sampler, batch_size, plan), dataset


def _epoch_samples(loader, finish: Callable[[Any], tuple] | None = None) -> int:
    """Run one epoch of a loader, each batch made ready for the model (`finish`: liverctl's cast /
    normalisation / device augmentation; the notebook's batches are ready as they come); returns how
    many samples came out. Batches finished on a GPU are waited for before it returns: CUDA queues the
    device augmentation's kernels, and an epoch's clock stopped before they ran would leave out the last ones."""
    seen, image = 0, None
    for batch in loader:
        image, _ = finish(batch) if finish is not None else batch
        seen += len(image)
    if getattr(image, "is_cuda", False):
        import torch

        torch.cuda.synchronize(image.device)
    return seen


def _with_augment(cfg: dict, augment: bool) -> dict:
    return cfg if augment else {**cfg, "data": {**cfg["data"], "augment": "none"}}


def _loader_figure(ctx: Context, samples: Samples, count: int, augment: bool) -> Figure:
    s = ctx.settings
    key = "loader_augmented" if augment else "loader_read_only"
    what = (f"loading: 2.5D samples/s with {s.preset} augmentation (liverctl {s.workers} workers vs "
            f"notebook num_workers=0), {count} samples" if augment
            else f"loading: 2.5D samples/s without augmentation (read path), {count} samples")
    fig = Figure(key, what, "samples/s", "baseline", higher_is_better=True, target=">= 3")
    base_loader = baseline_loader(ctx, samples, augment, s.loader_batch)
    clocks = EpochClocks()
    works = {BASELINE: lambda: clocks.run(BASELINE, base_loader, None)}
    try:
        loader, mine = liverctl_loader(ctx, _with_augment(ctx.config(), augment), samples.store_rows, s.loader_batch)
        works[LIVERCTL] = lambda: clocks.run(LIVERCTL, loader, lambda b: mine.finish(b, ctx.device))
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        fig.note = why(exc)
    if LIVERCTL in works:  # liverctl's workers start and reach their steady state, untimed (`warm_up`)
        try:
            reuse_freed_memory()
            ctx.profiles.setdefault("loader_warm_up", {})[key] = clocks.warm_up(
                loader, lambda b: mine.finish(b, ctx.device))
        except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
            works.pop(LIVERCTL)
            fig.note = why(exc)
    # each side under its own malloc: liverctl's loader as training sets it, the notebook as glibc's default
    setups = {BASELINE: default_freed_memory, LIVERCTL: reuse_freed_memory}
    timings, failed = race(works, max(s.repeats, s.loader_repeats), setups=setups, warmup=1)
    works.clear()  # let the loader's workers go
    fig.note = failed or fig.note
    for side, t in timings.items():
        setattr(fig, side, t.rate(t.result))
        fig.seconds[side] = t.seconds
    ctx.profiles.setdefault("loader_epoch_cpu_ms_per_sample", {})[key] = clocks.summary()
    return fig.settle()


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (None where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _proc_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc (None where there is none)."""
    import os

    fields = _proc_stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_new_pages(pid: int) -> int | None:
    """Minor page faults of a process so far: pages it touched for the first time (or mapped again)."""
    fields = _proc_stat(pid)
    return None if fields is None else int(fields[7])


def _over_processes(pids: list[int], read: Callable[[int], float | None]) -> float | None:
    """The sum of `read(pid)` over processes (0 for none), None if any cannot be read."""
    values = [read(pid) for pid in pids]
    return None if None in values else sum(values)


WARM_PAGES_PER_SAMPLE = 32  # a worker touching fewer new 4 KB pages than this per sample is warm
WARM_UP_EPOCHS = 8  # at most


class EpochClocks:
    """CPU per sample of whole loader epochs, from the processes' own clocks: this process (the
    iteration, the batches' hand-over and `finish`) and, for a loader with workers, the workers (read,
    decode, normalise, augment, batch, shared memory) - what a DataLoader really costs, hand-over
    included, where the one-thread figures time a worker's batch in this process."""

    def __init__(self):
        self.per_sample: dict[str, list[float]] = {}

    def run(self, side: str, loader, finish) -> int:
        workers = self._workers(loader)
        start, start_w = time.process_time(), self._cpu(workers)
        seen = _epoch_samples(loader, finish)
        workers = workers or self._workers(loader)  # started by this epoch: count them from the next
        main = (time.process_time() - start) / seen * 1000
        self.per_sample.setdefault(f"{side} main", []).append(main)
        if start_w is not None and workers:
            worker_ms = (self._cpu(workers) - start_w) / seen * 1000
            self.per_sample.setdefault(f"{side} workers", []).append(worker_ms)
            self.per_sample.setdefault(f"{side} total", []).append(main + worker_ms)
        return seen

    @staticmethod
    def _workers(loader) -> list[int]:
        iterator = getattr(loader, "_iterator", None)  # persistent workers live on it
        return [w.pid for w in getattr(iterator, "_workers", [])]

    @staticmethod
    def _cpu(pids: list[int]) -> float | None:
        return _over_processes(pids, _proc_cpu_seconds)

    def warm_up(self, loader, finish, max_epochs: int = WARM_UP_EPOCHS) -> dict[str, Any]:
        """Untimed epochs of a loader with workers until they stop touching new memory: what a run's
        first few hundred samples cost once, not what its epochs cost.

        Each worker writes its batches into shared-memory slots (`liverctl.data.handover.SlotPool`) it
        keeps for the whole run, and the first batch into each slot faults its pages in: ~66 MB a slot
        for a v5 float32 batch, 8 slots with 2 workers. Over the bench's 256-sample epochs that took the
        first two or three epochs (~170 new pages a sample, 6.3 ms of worker CPU a sample instead of 3.6,
        0.84 s an epoch instead of 0.5), and landed in the timed repeats. Returns each warm-up epoch's
        seconds and new pages per sample (the profile `loader_warm_up`), so the one-off cost stays visible.
        """
        seconds: list[float] = []
        pages: list[float] = []
        for _ in range(max_epochs):
            workers = self._workers(loader)
            before = _over_processes(workers, _proc_new_pages)
            start = time.perf_counter()
            seen = _epoch_samples(loader, finish)
            seconds.append(round(time.perf_counter() - start, 3))
            if not workers:  # this epoch started them (persistent workers), or the loader has none
                if self._workers(loader):
                    continue
                break
            after = _over_processes(workers, _proc_new_pages)
            if before is None or after is None:  # no /proc here
                break
            pages.append(round((after - before) / max(1, seen), 1))
            if pages[-1] < WARM_PAGES_PER_SAMPLE:
                break
        return {"epochs": len(seconds), "seconds": seconds, "new pages per sample": pages}

    def summary(self) -> dict[str, float]:
        return {k: round(float(np.median(v[1:] or v)), 3) for k, v in self.per_sample.items()}


def baseline_loader(ctx: Context, samples: Samples, augment: bool, batch_size: int):
    from liverctl.bench import baseline

    return baseline.notebook_loader(baseline_dataset(ctx, samples.cache_rows, augment), batch_size, ctx.settings.seed)


def measure_loader(ctx: Context) -> list[Figure]:
    s = ctx.settings
    count = max(1, s.samples // s.loader_batch) * s.loader_batch
    try:
        samples = pick_samples(ctx, count)
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        return [Figure(k, k, "samples/s", "baseline", True, note=why(exc))
                for k in ("loader_augmented", "loader_read_only")]
    # first, while this process has glibc's default malloc as workers and the notebook do: building
    # liverctl's loader sets `reuse_freed_memory` for the whole process (the race below sets each side's)
    cpu_figs = _measure_loader_cpu(ctx, samples)
    figs = [_loader_figure(ctx, samples, count, augment) for augment in (True, False)] + cpu_figs
    try:
        ctx.profiles["loader_cpu_ms_per_sample"] = loader_breakdown(ctx, samples)
    except Exception as exc:  # noqa: BLE001 - a diagnostic, never worth the run
        ctx.profiles["loader_cpu_ms_per_sample"] = {"error": why(exc)}
    return figs


@contextlib.contextmanager
def one_thread():
    """As in a DataLoader worker (`liverctl.workers.one_thread_each`): one torch, cv2 and blosc thread."""
    from liverctl.workers import one_thread_each

    restore = one_thread_each()
    try:
        yield
    finally:
        restore()


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


def _cpu_figures(ctx: Context) -> tuple[Figure, Figure]:
    s = ctx.settings
    cpu_fig = Figure("loader_cpu_per_sample",
                     f"loading: worker CPU per sample, {s.preset} augmentation on the CPU (read, decode, "
                     "normalise, augment, batch) vs notebook (__getitem__ + collate), one thread",
                     "s", "baseline", higher_is_better=False, target="<= 0.5")
    dev_fig = Figure("loader_worker_cpu_device",
                     "loading: worker CPU per sample when augmentation runs on the device (read, decode, "
                     "batch) vs the 2.5 ms budget, one thread", "s", "2.5 ms budget", higher_is_better=False,
                     target="<= 1.0", baseline=WORKER_BUDGET_S)
    return cpu_fig, dev_fig


def _worker_batches(ctx: Context, rows: np.ndarray, n: int) -> dict[str, Callable[[], int]]:
    """A worker's batches of the first `n` samples, on the cpu path and on the device path."""
    from liverctl.data.dataset import SliceDataset

    store, cfg, batch = ctx.store(), ctx.config(), ctx.settings.loader_batch
    paths = {where: SliceDataset(store, rows[:n], cfg, train=True, augment_on=where, device=ctx.device)
             for where in ("cpu", "device")}
    items = [(i, i) for i in range(n)]

    def batches(ds) -> int:
        for b in range(0, n, batch):
            ds.batch(items[b:b + batch])
        return n

    return {LIVERCTL: lambda: batches(paths["cpu"]), "device path": lambda: batches(paths["device"])}


def _measure_loader_cpu(ctx: Context, samples: Samples) -> list[Figure]:
    """The worker's CPU per sample, both augmentation paths: what decides whether a GPU waits on few cores.

    cpu path (`liverctl.data.augment_cpu`): read + decode, normalise, augment, resize and the batch itself
    (`SliceDataset.batch`, which replaces collation), against the notebook's `__getitem__` + collate.
    device path: the same worker reading the stored float16 into its batch, against the 2.5 ms budget.
    """
    import torch.utils.data

    s = ctx.settings
    cpu_fig, dev_fig = _cpu_figures(ctx)
    n = max(1, min(len(samples.cache_rows), 4 * s.loader_batch))
    base_ds = baseline_dataset(ctx, samples.cache_rows[:n], True)

    def notebook_part() -> int:
        items = [base_ds[i] for i in range(n)]
        for b in range(0, n, s.loader_batch):
            torch.utils.data.default_collate(items[b:b + s.loader_batch])
        return n

    works: dict[str, Callable[[], int]] = {BASELINE: notebook_part}
    try:
        if samples.store_rows is None:
            raise Unavailable("not available: no store (liverctl ingest failed)")
        works.update(_worker_batches(ctx, samples.store_rows, n))
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        cpu_fig.note = dev_fig.note = why(exc)
    with one_thread():
        try:
            per = _cpu_per_sample(works, max(s.repeats, 3))
        except Exception as exc:  # noqa: BLE001
            cpu_fig.note = dev_fig.note = why(exc)
            per = _cpu_per_sample({BASELINE: notebook_part}, max(s.repeats, 3))
    median = {k: float(np.median(v)) for k, v in per.items()}
    cpu_fig.baseline, cpu_fig.seconds[BASELINE] = median[BASELINE], per[BASELINE]
    if LIVERCTL in per:
        cpu_fig.liverctl, cpu_fig.seconds[LIVERCTL] = median[LIVERCTL], per[LIVERCTL]
        dev_fig.liverctl, dev_fig.seconds[LIVERCTL] = median["device path"], per["device path"]
    return [cpu_fig.settle(), dev_fig.settle()]


def _per_sample(fn, items) -> float:
    """CPU milliseconds per item of `fn(item)` over `items`."""
    start = time.process_time()
    for item in items:
        fn(item)
    return (time.process_time() - start) / len(items) * 1000


def _liverctl_breakdown(ctx: Context, rows: np.ndarray) -> dict[str, float]:
    from liverctl.data.augment_cpu import augment_sample
    from liverctl.data.dataset import SliceDataset

    store, cfg = ctx.store(), ctx.config()
    cpu = SliceDataset(store, rows, cfg, train=True, augment_on="cpu", device=ctx.device)
    dev = SliceDataset(store, rows, cfg, train=True, augment_on="device")
    index = store.slice_index()
    keys = [(index.case_id(r), int(index.z[r])) for r in rows]
    stacks = [store.read_stack(k[0], k[1], dtype=np.float16) for k in keys]
    labels = [store.read_label_slice(k[0], k[1]) for k in keys]
    norm = cpu.ranges[int(cpu.case_codes[0])]
    b = min(ctx.settings.loader_batch, len(rows))
    items = [(i, i) for i in range(b)]
    cpu_batch, dev_batch = cpu.batch(items), dev.batch(items)
    into = (cpu_batch["image"][0], cpu_batch["mask"][0, 0])  # as a worker writes a sample into its batch
    with one_thread():
        return {
            "chunk reads + decode (read_stack, float16)": _per_sample(
                lambda k: store.read_stack(k[0], k[1], dtype=np.float16), keys),
            "label read": _per_sample(lambda k: store.read_label_slice(k[0], k[1]), keys),
            "normalise + augment + into the batch (cpu path)": _per_sample(
                lambda i: augment_sample(stacks[i], labels[i], norm, cpu.augment, i, out=into), range(len(keys))),
            "batch, cpu path (per sample)": _per_sample(lambda _: cpu.batch(items), [0] * 3) / b,
            "batch, device path (per sample)": _per_sample(lambda _: dev.batch(items), [0] * 3) / b,
            "step side on this CPU, cpu path (per sample)": _per_sample(
                lambda _: cpu.finish(cpu_batch, "cpu"), [0] * 3) / b,
            "step side on this CPU, device path (per sample)": _per_sample(
                lambda _: dev.finish(dev_batch, "cpu"), [0] * 3) / b,
        }


def _baseline_breakdown(ctx: Context, rows: list) -> dict[str, float]:
    import torch.utils.data

    from liverctl.bench import baseline

    base_ds = baseline_dataset(ctx, rows, True)
    base_items = [base_ds[i] for i in range(min(ctx.settings.loader_batch, len(rows)))]
    images = [baseline.read_cache_window(ctx.cache_dir, r).transpose(1, 2, 0) for r in rows]
    with one_thread():
        return {
            "3x np.load + stack + float32": _per_sample(lambda r: baseline.read_cache_window(ctx.cache_dir, r), rows),
            "augmentation + ToTensorV2": _per_sample(
                lambda i: base_ds.transform(image=images[i], mask=np.zeros(images[i].shape[:2], np.float32)),
                range(len(rows))),
            "__getitem__ total": _per_sample(lambda i: base_ds[i], range(len(rows))),
            "collate (per sample)": _per_sample(lambda _: torch.utils.data.default_collate(base_items), [0] * 5)
            / len(base_items),
        }


def loader_breakdown(ctx: Context, samples: Samples, n: int = 32) -> dict[str, dict[str, float]]:
    """Where a loader's time goes: CPU milliseconds per sample of each step, in one process, one thread.

    liverctl: chunk reads + decode into float16 (`read_stack`), label read, normalise + augment
    (`augment_sample`, the cpu path), a whole batch on the cpu path and on the device path (per sample;
    the batch replaces collation), and the step's side of a batch here on the CPU (`finish`: cast and
    normalise; + the batched augmentation on the device path). Baseline: the three `np.load`s with the
    stack and float32 cast, augmentation + ToTensorV2, `__getitem__`, collation.
    """
    mine = _liverctl_breakdown(ctx, samples.store_rows[:n])
    theirs = _baseline_breakdown(ctx, samples.cache_rows[:n])
    return {LIVERCTL: {k: round(v, 3) for k, v in mine.items()}, BASELINE: {k: round(v, 3) for k, v in theirs.items()}}
