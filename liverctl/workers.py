"""How liverctl starts worker processes (DataLoader workers, ingest and synth pools): one home for the choice.

By the time workers start, the main process runs threads: zarr's `zarr_io` event loop and its `asyncio_*`
executor once a store has been opened, torch's thread pool after a step. fork() copies the locks those
threads hold, so a forked worker can hang for good (Python 3.12+ warns: "This process is multi-threaded,
use of fork() may lead to deadlocks in the child"). `forkserver` forks each worker from a clean
single-threaded server process instead. The price is start-up: a worker imports what it needs (torch for a
DataLoader worker, a few seconds) instead of inheriting it, once per pool or per persistent DataLoader.
What a worker gets travels pickled: the datasets, `LiverStore` and the ingest jobs are picklable.
Where forkserver does not exist (Windows), the platform's default (spawn) stays.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.context import BaseContext


def start_method() -> str:
    """`forkserver` where the platform has it, else the platform's default start method."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        return "forkserver"
    return multiprocessing.get_start_method()


def mp_context(preload: tuple[str, ...] = ()) -> BaseContext:
    """The multiprocessing context for every pool of worker processes liverctl starts.

    `preload`: modules the forkserver imports once, before it forks any worker, so that each worker starts
    with them loaded (torch for DataLoader workers: measured on 2 busy cores, a loader's first batch after
    7-9 s for the first loader of a process and 1.5 s for the next, against 12-19 s each without; fork
    took 0.2-0.4 s). Only the first pool of a process decides: there is one forkserver per process.
    """
    context = multiprocessing.get_context(start_method())
    if start_method() == "forkserver":  # the forkserver outlives a SIGTERM to the group (forkserver_preload)
        context.set_forkserver_preload(["liverctl.forkserver_preload", *(["__main__", *preload] if preload else [])])
    return context


def start_forkserver(preload: tuple[str, ...]) -> None:
    """Start this process's forkserver now, with `preload` (`mp_context`), where the platform has one: for a
    process that starts pools of several kinds (bench: synth, ingest, then DataLoader workers; the test
    session), whose first pool would otherwise decide for all. After synth's pool had started it bare, every
    DataLoader worker of the process imported torch and albumentations itself."""
    if start_method() == "forkserver":
        import multiprocessing.forkserver

        mp_context(preload)
        multiprocessing.forkserver.ensure_running()


def default_sigterm() -> None:
    """In a pool worker (ingest, synth): die on SIGTERM as a process does by default (the forkserver that
    started it ignores SIGTERM, `liverctl.forkserver_preload`), so that a pool can be stopped; and with the
    main process (`exit_with_main_process`); its locks unnamed (`unnamed_locks`)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    unnamed_locks()
    exit_with_main_process()


def unnamed_locks() -> None:
    """In a worker (pool or DataLoader), which starts no process of its own: a `multiprocessing.Lock()` it makes
    is unlinked as it is made, nothing named to track or leave behind.

    numcodecs' blosc makes one at a worker's first encode or decode: under forkserver (the worker's default
    context, inherited) a named semaphore in /dev/shm, registered with the resource tracker and unregistered
    only at a clean exit. A worker that dies (SIGTERM, or with a killed trainer: `exit_with_main_process`) runs
    no finalizer: the tracker warned "There appear to be N leaked semaphore objects" (one per worker), and where
    the tracker was killed too (kill -9 of the process group) the file stayed. With `fork` as the default context
    the lock is unlinked at once."""
    if "fork" in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("fork", force=True)


def exit_with_main_process() -> None:
    """In a pool or DataLoader worker: exit at once when the main process dies (SIGKILL from the OOM killer,
    a SIGTERM to it alone). A forkserver worker's parent is the forkserver, which outlives the main process
    as long as a worker does: watching `os.getppid()` (as torch's DataLoader workers and ingest's did) never
    saw it die, and the workers waited on their task queue for good. `multiprocessing.parent_process()` is
    the process that asked for the worker, and its sentinel is ready when that process is gone."""
    import multiprocessing
    import threading
    from multiprocessing.connection import wait

    main = multiprocessing.parent_process()
    if main is None:  # not a multiprocessing child
        return

    def exit_when_main_dies() -> None:
        wait([main.sentinel])
        os._exit(1)  # what the worker had half-written is the main process's to clean (ingest: the work folder)

    threading.Thread(target=exit_when_main_dies, name="exit-with-main", daemon=True).start()


def one_thread_each() -> Callable[[], None]:
    """Run this process's numeric libraries on one thread each: torch, OpenCV (albumentations' warps) and
    blosc (the store's chunk decoder). A DataLoader or pool worker calls it at start: on few cores the
    libraries' own thread pools only fight the other workers and the main process (and spin while
    waiting on a loaded machine). Returns a function that puts the previous thread counts back (for a
    measurement in the main process, `liverctl bench`)."""
    import cv2
    import torch
    from numcodecs import blosc

    before = (torch.get_num_threads(), cv2.getNumThreads())
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    blosc_before = blosc.set_nthreads(1)  # returns the previous count

    def restore() -> None:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
        blosc.set_nthreads(blosc_before)

    return restore
