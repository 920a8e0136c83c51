"""Running ingest's case jobs: in this process or a pool of worker processes, results as they finish, and
a worker killed by the OS (the OOM killer) failing only the case it was writing."""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from liverctl.data.case_writer import CaseJob, CaseResult, build_case, worker_init
from liverctl.workers import mp_context

# Modules the forkserver imports once, before it forks the workers: each worker starts with them loaded.
CASE_PRELOAD = ("liverctl.data.case_writer",)


def run_jobs(jobs: list[CaseJob], workers: int | None) -> Iterator[CaseResult]:
    """Run the jobs in this process (one worker) or a process pool, yielding results as they finish.

    A worker killed by the OS (the OOM killer's SIGKILL) breaks the whole pool: the jobs it never started
    go on in a fresh pool, and those in flight are run again one at a time, so the case that kills its
    worker is the one reported ("worker killed, probably out of memory") and every other case is ingested.
    """
    n = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    jobs = [dataclasses.replace(job, workers=n) for job in jobs]
    if n == 1 or len(jobs) <= 1:
        for job in jobs:
            yield build_case(job)
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


def _killed(job: CaseJob) -> CaseResult:
    return CaseResult(
        job.case.case_id,
        False,
        f"{job.case.volume}: worker killed while ingesting case {job.case.case_id}, probably out of memory",
    )


def _run_pool(pending: collections.deque[CaseJob], n: int) -> Generator[CaseResult, None, list[CaseJob]]:
    """Run jobs taken from `pending` in a pool of `n` processes, at most `n` at a time (so that the jobs in
    flight are known), yielding results. Returns the jobs in flight when a worker died ([] if none did);
    jobs never started stay in `pending`."""
    pool = ProcessPoolExecutor(max_workers=n, initializer=worker_init, mp_context=mp_context(CASE_PRELOAD))
    in_flight: dict[Future, CaseJob] = {}
    try:
        while pending or in_flight:
            broken = not _fill(pool, pending, in_flight, n)
            done: set[Future] = set()
            if not broken:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                broken = any(isinstance(future.exception(), BrokenProcessPool) for future in done)
            if broken:
                return (yield from _drain_broken(pool, in_flight))
            for future in done:
                del in_flight[future]
                yield future.result()
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()
    return []


def _fill(pool: ProcessPoolExecutor, pending: collections.deque[CaseJob], in_flight: dict, n: int) -> bool:
    """Submit pending jobs until `n` are in flight; False if the pool broke (a worker died) meanwhile."""
    while pending and len(in_flight) < n:
        job = pending.popleft()
        try:
            in_flight[pool.submit(build_case, job)] = job
        except BrokenProcessPool:  # a worker died since the last result: this job never started
            pending.appendleft(job)
            return False
    return True


def _drain_broken(pool: ProcessPoolExecutor, in_flight: dict) -> Generator[CaseResult, None, list[CaseJob]]:
    """A worker died: the pool fails every unfinished job; yield the finished ones' results and return the
    jobs that were lost."""
    wait(in_flight)
    lost = []
    for future, job in in_flight.items():
        if future.exception() is None:
            yield future.result()
        else:
            lost.append(job)
    pool.shutdown(wait=True)
    return lost


def _stop(pool: ProcessPoolExecutor) -> None:
    """Ctrl-C or an error in the main process: stop the workers now; their half-written cases stay in the
    work folder, which the next run deletes."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API to stop them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)
