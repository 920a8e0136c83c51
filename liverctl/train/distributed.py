"""DDP through `torchrun`: one process per device, rank 0 the only writer of events and checkpoints.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); a plain
`liverctl train` has none of them and runs as a world of one with no process group.

A rank that fails on its own ends its process group, and rank 0 (the one writer of the run's log) then
fails in its next collective with the backend's "Connection closed by peer": a rank other than 0 leaves its
own error in the run folder first (`report_failure`), and rank 0 reports the earliest of those that came
before its own failure (`earlier_failure`), as torchrun names the first failure its root cause. In a
validation, where each rank validates its own cases with no collective until the end, rank 0 looks for
those failures between its batches (`liverctl.train.loop`): torchrun SIGTERMs the ranks left once one has
exited non-zero and SIGKILLs them 30 s later, and a rank ignores that SIGTERM once its run has ended, so that
rank 0 still prints its line.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun: a process group even for a world of one

    @property
    def enabled(self) -> bool:
        return self.world > 1 or self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """The process's place in a torchrun launch. `torchrun --nproc_per_node 1` is a world of one that
    still runs through the process group (NCCL or gloo) and DDP, so that one device proves the path."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")), launched=True)


def init(info: DistInfo, device_type: str) -> None:
    import torch.distributed as dist

    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


def backend(info: DistInfo) -> str | None:
    """The process group's backend ("nccl", "gloo"), None when there is none."""
    import torch.distributed as dist

    return dist.get_backend() if info.enabled and dist.is_initialized() else None


def shutdown(info: DistInfo) -> None:
    import torch.distributed as dist

    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def any_across(info: DistInfo, flags: list[bool], device) -> list[bool]:
    """Element-wise OR of boolean flags over all ranks (every rank must call it at the same point)."""
    import torch
    import torch.distributed as dist

    if not info.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def sum_across(info: DistInfo, values: list[float], device) -> list[float]:
    import torch
    import torch.distributed as dist

    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather_objects(info: DistInfo, obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    import torch.distributed as dist

    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def report_failure(info: DistInfo, run_dir: str | os.PathLike, message: str) -> None:
    """Leave this rank's failure (`message`, its first line) for rank 0, timed now: before this rank's
    process group ends, which is what rank 0 sees fail. Best effort: a run folder this rank cannot write (on
    another machine) leaves the error on this rank's stderr only."""
    from liverctl.errors import LiverctlError
    from liverctl.files import write_atomic
    from liverctl.runs.folder import rank_failure_path

    line = (message.strip().splitlines() or [""])[0][:500]
    record = {"rank": info.rank, "ts": time.time(), "message": line}
    try:
        if Path(run_dir).is_dir():
            write_atomic(rank_failure_path(run_dir, info.rank), json.dumps(record) + "\n")
    except (OSError, LiverctlError):
        pass


def earlier_failure(info: DistInfo, run_dir: str | os.PathLike, *, since: float, failed_at: float,
                    wait_s: float = 2.0) -> str | None:
    """"rank R failed: <its message>" for the first failure another rank reported between `since` (this
    start) and `failed_at` (when rank 0 failed), waiting up to `wait_s` for one to appear; None when there is
    none (rank 0 failed first, or on its own)."""
    from liverctl.runs.folder import rank_failures

    deadline = time.monotonic() + wait_s
    while True:
        found = [(ts, rank, message) for ts, rank, message in rank_failures(run_dir)
                 if rank < info.world and since <= ts <= failed_at]
        if found:
            _, rank, message = found[0]
            return f"rank {rank} failed: {message}"
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)
