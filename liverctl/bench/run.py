"""`liverctl bench`: liverctl against the notebook baseline, on the same files, in one run.

Every figure is a pair (liverctl, reference) measured in the same process tree, each the median of
`repeats` timed runs, and their ratio liverctl / reference (`liverctl.bench.report`). The reference is
the notebook baseline (`liverctl.bench.baseline`) except for three rows: ingest against the
read-and-decompress floor, the full training pipeline against the model alone on tensors already in
memory, and the device-path worker CPU against its 2.5 ms budget.

The parts (`settings.only`, `--only`): ingest (`bench.ingest`), loader (`bench.loader`), training
(`bench.training`), submit (`bench.submit_side`), real (`bench.real`). Without the ingest part, the store
and the notebook cache the others read are built once, untimed.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from liverctl.bench.context import BenchSettings, Context, synthetic_dataset, train_cases
from liverctl.bench.report import BenchReport, Figure


def _stages() -> dict[str, Callable[[Context], list[Figure]]]:
    from liverctl.bench.ingest import measure_ingest
    from liverctl.bench.loader import measure_loader
    from liverctl.bench.real import measure_real
    from liverctl.bench.submit_side import measure_submit
    from liverctl.bench.training import measure_training

    return {"ingest": measure_ingest, "loader": measure_loader, "training": measure_training,
            "submit": measure_submit, "real": measure_real}


def run_bench(settings: BenchSettings, on_stage: Callable[[str], None] = lambda s: None) -> BenchReport:
    """Measure every figure of the chosen parts (see the module docstring); nothing is printed."""
    from liverctl.bench.ingest import prepare_store
    from liverctl.data.case_pool import CASE_PRELOAD
    from liverctl.data.loaders import WORKER_PRELOAD
    from liverctl.workers import start_forkserver

    settings.validate()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    work = Path(settings.workdir)
    work.mkdir(parents=True, exist_ok=True)
    torch = _torch(settings)
    start_forkserver((*WORKER_PRELOAD, *CASE_PRELOAD))  # before synth's pool: for the loaders' workers too

    on_stage("synthetic dataset")
    data_dir = synthetic_dataset(settings, work)
    ctx = Context(settings=settings, work=work, data_dir=data_dir, cases=train_cases(data_dir), torch=torch)
    if "ingest" not in settings.only and set(settings.only) - {"real"}:
        on_stage("store and cache (untimed)")
        prepare_store(ctx)

    figures: list[Figure] = []
    stage_seconds: dict[str, float] = {}
    for stage, measure in _stages().items():
        if stage not in settings.only:
            continue
        on_stage(stage)
        settle_disk()
        t_stage = time.perf_counter()
        figures.extend(measure(ctx))
        stage_seconds[stage] = round(time.perf_counter() - t_stage, 2)
    return BenchReport(settings=settings, figures=figures, machine=_machine(torch), started=started,
                       seconds=round(time.perf_counter() - t0, 1), stage_seconds=stage_seconds,
                       profiles=ctx.profiles)


def settle_disk() -> None:
    """Write out what the bench itself has just written (store, notebook cache, synthetic data) before a
    timed stage. Otherwise the kernel flushes it ~30 s later, in the middle of whatever is being timed:
    bursts of 90 and 190 MB went out during the loader stage on a 2-core machine (`vmstat`), with kernel
    CPU beside them. (The slow first loader epochs seen then had another cause, the workers' first touch
    of their batch slots: `liverctl.bench.loader.EpochClocks.warm_up`.)"""
    if hasattr(os, "sync"):
        os.sync()


def _torch(settings: BenchSettings):
    import torch

    torch.manual_seed(settings.seed)
    return torch


def _machine(torch) -> dict:
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
