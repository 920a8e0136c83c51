"""DDP through `torchrun`: one process per device, rank 0 the only writer of events and checkpoints.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); a plain
`liverctl train` has none of them and runs as a world of one with no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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
