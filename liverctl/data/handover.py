"""How a DataLoader worker's batch reaches the main process: in shared memory, reused once released.

A tensor a worker returns travels as a handle to its shared-memory segment, so handing over copies
nothing. But a fresh segment per batch is not free: allocating and first touching the 29 MB of a v5
batch (16 x 3 x 512 x 512 float16 + the uint8 mask) costs 15-18 ms, about 1 ms per sample, as much as
reading and decoding it. So each worker keeps a few segments (`SLOTS_PER_WORKER`) and writes its next
batch into one the training step has released: `SliceDataset.finish` releases a batch's slot once it
has made its own copies (the cast / transfer), or, where `finish` returned the batch's own memory (float32
for a step on the CPU), at the next `finish`. Until then the slot is never reused, so a batch that is
kept unfinished (`list(loader)`) stays intact; when every slot is held, the worker takes a fresh segment.

Contract: a batch's `image` and `mask` are valid until `finish` has been called on it; what `finish`
returned is valid until the next `finish`.
"""

from __future__ import annotations

import math
import os

SLOTS_PER_WORKER = 4  # DataLoader's prefetch_factor (2) + the batch being used + one spare
NO_SLOT = (0, -1, -1)  # a batch in a fresh segment (or built outside a worker): nothing to release


def shared_tensor(shape: tuple[int, ...], dtype):
    """An empty CPU tensor; in a DataLoader worker, allocated in shared memory as `default_collate`
    does, so that handing the batch over copies nothing."""
    import torch
    from torch.utils.data import get_worker_info

    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape), device="cpu")
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


class SlotPool:
    """Reusable shared-memory batch buffers, per worker. `free` is a (workers, slots) uint8 tensor in
    shared memory, made in the main process before the workers start (1 = free): a worker claims a
    free slot (sets 0) and writes its batch there; the main process frees it (`release`)."""

    def __init__(self, workers: int, slots: int = SLOTS_PER_WORKER):
        import torch

        self.free = torch.ones((max(1, workers), slots), dtype=torch.uint8).share_memory_()
        self.token = int.from_bytes(os.urandom(3), "little")  # tells this pool's slots from another's
        self._buffers: dict[int, tuple] = {}  # in a worker: slot -> (image, mask) of the last shape
        self._mapped: dict[tuple[int, int], tuple] = {}  # in the main process: slot -> its last batch's tensors

    def __getstate__(self) -> dict:
        return {"free": self.free, "token": self.token}  # a worker starts with no buffers of its own

    def __setstate__(self, state: dict) -> None:
        self.free, self.token = state["free"], state["token"]
        self._buffers, self._mapped = {}, {}

    def buffers(
        self, image_shape: tuple[int, ...], mask_shape: tuple[int, ...], image_dtype=None, mask_dtype=None,
    ) -> tuple:
        """(image `image_dtype` (float16 by default), mask `mask_dtype` (uint8 by default), slot id (pool
        token, worker, slot); worker -1: a fresh segment)."""
        import torch
        from torch.utils.data import get_worker_info

        image_dtype, mask_dtype = image_dtype or torch.float16, mask_dtype or torch.uint8

        info = get_worker_info()
        worker = info.id if info is not None else -1
        # tolist() reads the flags one by one: the main process may free a slot meanwhile, and torch.nonzero
        # over memory that changes between its counting and its writing pass fails an internal assert
        flags = self.free[worker].tolist() if 0 <= worker < len(self.free) else []
        free = [slot for slot, flag in enumerate(flags) if flag]
        if not free:  # not in a worker, or every slot held: a fresh segment, never reused
            return shared_tensor(image_shape, image_dtype), shared_tensor(mask_shape, mask_dtype), NO_SLOT
        slot = free[0]
        self.free[worker, slot] = 0
        image, mask = self._buffers.get(slot, (None, None))
        wanted = (image_shape, image_dtype, mask_shape, mask_dtype)
        if image is None or (tuple(image.shape), image.dtype, tuple(mask.shape), mask.dtype) != wanted:
            image, mask = shared_tensor(image_shape, image_dtype), shared_tensor(mask_shape, mask_dtype)
            self._buffers[slot] = (image, mask)
        return image, mask, (self.token, worker, slot)

    def release(self, slot, tensors: tuple = ()) -> None:
        """Free a batch's slot (in the main process, once the batch's data has been copied).

        `tensors` (the batch's image and mask) stay referenced until the slot's next batch arrives:
        torch then finds the segment still mapped in this process (its shared-storage cache) and
        reuses the mapping instead of mapping and faulting in the 29 MB again."""
        token, worker, index = (int(v) for v in slot)
        if token == self.token and worker >= 0:  # not a fresh segment, nor another loader's slot
            self._mapped[(worker, index)] = tensors
            self.free[worker, index] = 1


BATCH_HEAP_BYTES = 256 * 1024**2  # batches up to this size reuse freed heap memory (`reuse_freed_memory`)


def reuse_freed_memory() -> None:
    """Let glibc's malloc keep freed memory up to BATCH_HEAP_BYTES a block for the next allocation.

    By default glibc maps every block over 32 MB fresh from the kernel and unmaps it when freed, so each
    float32 batch the training step casts (16 x 3 x 512 x 512: 50 MB) faults in and zeroes new pages:
    ~20 ms a batch, more CPU in the main process than the cast itself (~2 ms with the memory reused).
    The process keeps its peak heap instead of handing it back. No-op where malloc is not glibc's.
    """
    _set_malloc_thresholds(mmap_bytes=BATCH_HEAP_BYTES, trim_bytes=2 * BATCH_HEAP_BYTES)


GLIBC_MMAP_MAX = 32 * 1024**2  # glibc's dynamic mmap threshold stops growing here (64-bit)


def default_freed_memory() -> None:
    """Undo `reuse_freed_memory`: the thresholds a process with glibc's defaults settles at once it has
    freed a few large blocks (mmap 32 MB, trim 64 MB), so blocks over 32 MB are mapped fresh again.
    `liverctl bench` times the notebook's loader under these, as a notebook process runs."""
    _set_malloc_thresholds(mmap_bytes=GLIBC_MMAP_MAX, trim_bytes=2 * GLIBC_MMAP_MAX)


def _set_malloc_thresholds(*, mmap_bytes: int, trim_bytes: int) -> None:
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, mmap_bytes)
    mallopt(m_trim_threshold, trim_bytes)
