"""The DataLoaders over the slice datasets (`liverctl.data.dataset`): how many workers and how they hand
batches over on this machine (`plan_loader`), how a worker starts and ends (`_worker_init`), and the
training and validation loaders themselves.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from liverctl.data.dataset import EpochSampler, SliceDataset, ValidationDataset
from liverctl.data.handover import SlotPool, reuse_freed_memory
from liverctl.plural import plural

SHM_MIN_BYTES = 512 * 1024**2  # below this (Docker's default is 64 MB) worker batches may not fit


@dataclass
class LoaderPlan:
    """How the DataLoader will run here, and why (reported as a `note` event when it matters)."""

    num_workers: int
    sharing_strategy: str | None
    pin_memory: bool
    note: str | None = None


def plan_loader(requested_workers: int, batch_bytes: int, cuda: bool) -> LoaderPlan:
    """Worker count and sharing strategy for this machine.

    `requested_workers` (data.num_workers) is capped at the CPU count; 0 loads in the process that trains,
    as PyTorch's `num_workers=0` does (debugging, a notebook where worker processes are fragile): no worker
    starts, and the batches are the same as with workers (each sample's augmentation is drawn from its seed).
    Workers hand batches over through /dev/shm; Docker's default 64 MB cannot hold a few prefetched
    batches and the loader dies with a bus error. Then tensors go through files instead
    (`file_system` strategy); workers stay on.
    """
    workers = max(0, min(int(requested_workers), os.cpu_count() or 1))
    if workers == 0:
        return LoaderPlan(0, None, cuda)
    try:
        shm = shutil.disk_usage("/dev/shm").free
    except OSError:
        shm = None
    need = batch_bytes * workers * 2 * 2  # prefetch_factor 2, some headroom
    if shm is not None and (shm < SHM_MIN_BYTES or shm < need):
        return LoaderPlan(
            workers,
            "file_system",
            cuda,
            f"/dev/shm has {shm / 1e6:.0f} MB free (batches need ~{need / 1e6:.0f} MB): using the "
            f"file_system sharing strategy for {plural(workers, 'worker')}; run Docker with --shm-size=2g to avoid it",
        )
    return LoaderPlan(workers, None, cuda)


def _worker_init(_worker_id: int, sharing_strategy: str | None = None) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # first (see below): a Ctrl-C during the imports is not a traceback
    import torch

    if sharing_strategy:  # a worker started by forkserver does not inherit the main process's choice
        torch.multiprocessing.set_sharing_strategy(sharing_strategy)
    from liverctl.workers import exit_with_main_process, one_thread_each, unnamed_locks

    exit_with_main_process()  # torch's own watchdog follows os.getppid(): the forkserver, which outlives a killed trainer
    one_thread_each()  # a worker's torch/cv2/blosc threads only fight the main process
    unnamed_locks()  # blosc's lock: not a named semaphore that a killed worker leaves registered (or in /dev/shm)
    reuse_freed_memory()  # a sample's float32 planes and warps (~1 MB each) reuse the heap, not fresh pages
    # Ctrl-C (SIGINT) reaches the whole process group, and so does SIGTERM from `timeout`, `kill -- -PGID`
    # or a notebook's stop; the trainer saves a checkpoint on either, so its workers must finish the batch
    # it is waiting for. SIGINT is left to the trainer; SIGTERM ends a worker WORKER_SIGTERM_GRACE_S later
    # (SIGALRM's default action), as `terminate()` from the trainer or from multiprocessing at exit expects
    signal.signal(signal.SIGTERM, _end_after_grace)


WORKER_SIGTERM_GRACE_S = 10  # long enough for the batch in flight, short enough for terminate() to end it


def _end_after_grace(_signum, _frame) -> None:
    import signal

    signal.alarm(WORKER_SIGTERM_GRACE_S)


# imported once by the forkserver, not by every worker (liverctl/workers.py)
WORKER_PRELOAD = ("torch", "albumentations", "liverctl.data.store", "liverctl.data.dataset", "liverctl.data.loaders")


def _worker_kwargs(plan: LoaderPlan) -> dict:
    """The DataLoader arguments about worker processes, the same for the training and validation loaders."""
    import functools

    from liverctl.workers import mp_context  # forkserver: the main process runs threads by now

    workers = plan.num_workers > 0
    return {
        "num_workers": plan.num_workers,
        "pin_memory": plan.pin_memory,
        "persistent_workers": workers,
        "worker_init_fn": functools.partial(_worker_init, sharing_strategy=plan.sharing_strategy),
        "multiprocessing_context": mp_context(WORKER_PRELOAD) if workers else None,
    }


def make_train_loader(dataset: SliceDataset, sampler: EpochSampler, batch_size: int, plan: LoaderPlan):
    """Batches of `dataset.batch` (dicts, see `liverctl.data.augment_device`); `dataset.finish(batch, device)`
    turns one into (image, mask) on the device. With workers, a batch's image and mask live in a reused
    shared-memory slot (`liverctl.data.handover`): valid until `finish` has been called on it, and what
    `finish` returned in place (a step on the CPU) until the next `finish`."""
    import torch
    from torch.utils.data import BatchSampler, DataLoader

    if plan.sharing_strategy:
        torch.multiprocessing.set_sharing_strategy(plan.sharing_strategy)
    reuse_freed_memory()  # the process that iterates the loader copies every batch (pinning, `finish`'s cast)
    if plan.num_workers > 0:  # made here, before the workers start, so that they share it
        dataset.slots = SlotPool(plan.num_workers)
    # each worker builds a whole batch (`SliceDataset.batch`), reading straight into it: no collation
    return DataLoader(
        dataset, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last=True), **_worker_kwargs(plan)
    )


def end_workers(*loaders) -> None:
    """End the worker processes of these DataLoaders now, the way their iterator ends them once collected (None
    in a queue, then a join). A run that failed keeps its training loader's iterator alive in the exception's
    traceback until the interpreter's exit, and there multiprocessing SIGTERMs a worker it finds still running:
    the worker then finished its batch first (`WORKER_SIGTERM_GRACE_S`), and a torchrun rank that failed took 10 s
    longer to exit, so the other ranks saw its end (their broken collective) that much later. DataLoader has no
    public close: the iterator's own `_shutdown_workers` (what its `__del__` calls; a second call does nothing)."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)  # persistent workers live on it
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
            loader._iterator = None  # a later epoch (none here) would start workers afresh


def make_val_loader(dataset: ValidationDataset, batch_size: int, plan: LoaderPlan, rank: int = 0, world: int = 1):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_sampler=dataset.case_batches(batch_size, rank, world), **_worker_kwargs(plan))
