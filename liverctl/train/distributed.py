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
rank 0 still prints its line. A rank killed by a signal (SIGKILL from the out-of-memory killer) leaves no failure
of its own: rank 0 finds its process gone (`_processes`, gathered at `init`) and reports that it died.
"""

from __future__ import annotations

import json
import os
import signal
import socket
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


# (host, pid) of every rank's process, by rank, gathered once the process group is up: how rank 0 tells a rank
# that was killed (it left no failure of its own) from one that is still there (`died_without_a_word`)
_processes: list[tuple[str, int]] = []


def init(info: DistInfo, device_type: str) -> None:
    import torch.distributed as dist

    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        _processes[:] = gather_objects(info, (socket.gethostname(), os.getpid()))


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
    from liverctl.printable import first_line
    from liverctl.runs.folder import rank_failure_path

    line = first_line(message, 500)
    record = {"rank": info.rank, "ts": time.time(), "message": line}
    try:
        if Path(run_dir).is_dir():
            write_atomic(rank_failure_path(run_dir, info.rank), json.dumps(record) + "\n")
    except (OSError, LiverctlError):
        pass


SEE_TRACEBACK = "its traceback is on that rank's stderr"
SEE_KERNEL_LOG = "see that rank's stderr and the kernel log, `dmesg`"


def earlier_failure(info: DistInfo, run_dir: str | os.PathLike, *, since: float, failed_at: float,
                    wait_s: float = 2.0) -> tuple[str, str] | None:
    """(message, where to look) for the first failure of another rank: "rank R failed: <its message>" for one
    it reported between `since` (this start) and `failed_at` (when rank 0 failed), else "rank R died ..." for a
    rank whose process is gone without a word (`died_without_a_word`), waiting up to `wait_s` for either; None
    when there is neither (rank 0 failed first, or on its own)."""
    from liverctl.runs.folder import rank_failures

    deadline = time.monotonic() + wait_s
    while True:
        found = [(ts, rank, message) for ts, rank, message in rank_failures(run_dir)
                 if rank < info.world and since <= ts <= failed_at]
        if found:
            _, rank, message = found[0]
            return f"rank {rank} failed: {message}", SEE_TRACEBACK
        if (died := died_without_a_word(info)) is not None:  # its own failure, written before it ends, came first
            return died, SEE_KERNEL_LOG
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def died_without_a_word(info: DistInfo) -> str | None:
    """"rank R died: <how>" for the first other rank on this machine whose process has ended (a rank that fails
    on its own reports it first, `report_failure`: one that ended without it was killed, by the out-of-memory
    killer's SIGKILL most often, or crashed); None when every such process is still there. The signal is named
    when the process is caught before torchrun collects it (a zombie's exit code in /proc)."""
    host = socket.gethostname()
    for rank, (rank_host, pid) in enumerate(_processes):
        if rank == info.rank or rank_host != host:  # another machine's processes cannot be looked at
            continue
        ended = _how_it_ended(pid)
        if ended is not None:
            return f"rank {rank} died: {ended}"
    return None


def dead_rank(info: DistInfo, wait_s: float = 1.0) -> str | None:
    """`died_without_a_word`, waiting up to `wait_s` for it: a rank whose collective broke when another rank was
    killed (rank 0 by the out-of-memory killer, say) sees the connection close while the killed process is still
    ending, before /proc shows it ended."""
    deadline = time.monotonic() + wait_s
    while (died := died_without_a_word(info)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return died


def _how_it_ended(pid: int) -> str | None:
    """How process `pid` ended, in words; None while it runs (or where there is no /proc to tell)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if not Path("/proc/self").exists():
            return None
        return "it ended without a word: killed (the out-of-memory killer's SIGKILL?) or crashed"
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the name (field 2) may hold anything; fields[0] is field 3
    if fields[0] not in ("Z", "X"):
        return None
    status = int(fields[49]) if len(fields) > 49 and fields[49].isdigit() else 0  # field 52: the wait status
    if status & 0x7F:
        number = status & 0x7F
        name = signal.Signals(number).name if number in signal.valid_signals() else "a signal"
        oom = ", as the out-of-memory killer does: out of memory?" if number == signal.SIGKILL else ""
        return f"killed by {name} (signal {number}){oom}"
    return f"it exited with status {status >> 8} without a word (a crash?)"
