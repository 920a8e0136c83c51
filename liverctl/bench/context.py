"""What every part of `liverctl bench` shares: the settings, the run's context (data, store, cache,
config), the same samples drawn for both pipelines, and timing in turns that survives a failed part."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.bench import baseline
from liverctl.bench.timing import Timing, time_interleaved
from liverctl.errors import LiverctlError

LIVER_LABELS = (1,)
LIVERCTL, BASELINE = "liverctl", "baseline"
PARTS = ("ingest", "loader", "training", "submit", "real")  # what `--only` chooses from


@dataclass
class BenchSettings:
    """What to measure, and how much of it. `quick_settings()` is the tiny run the test uses."""

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
    only: tuple[str, ...] = PARTS

    @classmethod
    def quick_settings(cls, **overrides: Any) -> BenchSettings:
        base = cls(cases=2, size=64, slices=16, samples=32, loader_batch=4, train_batch=2, train_steps=1,
                   infer_slices=2, loader_repeats=3, quick=True)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self) -> None:
        if self.cases < 2:
            raise LiverctlError(f"--cases {self.cases}: need at least 2 (one to train on, one to hold out)")
        if self.size < 32 or self.size % 32:
            raise LiverctlError(f"--size {self.size}: must be a positive multiple of 32 (the U-Net's stride)")
        if self.slices < 3:
            raise LiverctlError(f"--slices {self.slices}: need at least 3 for a 2.5D stack")
        if self.repeats < 3:
            raise LiverctlError(f"repeats {self.repeats}: need at least 3 for a median")
        if self.real and self.real_dir is not None and "real" in self.only and not Path(self.real_dir).is_dir():
            # not another folder in its place: the figures would be of other data than the one asked for
            raise LiverctlError(f"--real-dir {self.real_dir}: no such folder")
        unknown = [p for p in self.only if p not in PARTS]
        if unknown or not self.only:
            raise LiverctlError(f"--only {','.join(self.only)}: choose from {','.join(PARTS)}")


def parse_only(text: str | None) -> tuple[str, ...]:
    """`--only ingest,loader` -> ("ingest", "loader"); None or "" -> every part."""
    if not text:
        return PARTS
    return tuple(p.strip() for p in text.split(",") if p.strip())


class Unavailable(Exception):
    """A liverctl part could not be measured; the message goes into the figure's note."""


def why(exc: BaseException) -> str:
    """The note of a figure whose liverctl side could not be measured."""
    if isinstance(exc, Unavailable):
        return str(exc)
    return f"failed: {type(exc).__name__}: {exc}".splitlines()[0]


def race(
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
        return time_interleaved(rest, repeats, setups=setups, warmup=warmup), why(exc)


@dataclass
class Context:
    settings: BenchSettings
    work: Path
    data_dir: Path
    cases: list[tuple[str, Path, Path | None]]
    torch: Any
    store_path: Path | None = None  # the liverctl store once ingested
    cache_dir: Path | None = None  # the notebook cache once built
    cfg: dict | None = None
    profiles: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return "cuda" if self.torch.cuda.is_available() else "cpu"

    def config(self) -> dict:
        if self.cfg is None:
            from liverctl.config import resolve_config

            s = self.settings
            self.cfg = resolve_config(s.preset, [
                f"data.input_size={s.size}",
                f"data.num_workers={s.workers}",
                f"data.store={self.store_path}",
                "model.encoder_weights=none",
                f"train.batch_size={s.loader_batch}",
            ])
        return self.cfg

    def store(self):
        """The liverctl store of the synthetic cases (`Unavailable` when ingest failed)."""
        if self.store_path is None:
            raise Unavailable("not available: no store (liverctl ingest failed)")
        from liverctl.data.store import LiverStore

        return LiverStore.open(self.store_path)


def synthetic_dataset(settings: BenchSettings, work: Path) -> Path:
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


def train_cases(data_dir: Path) -> list[tuple[str, Path, Path | None]]:
    from liverctl.data.sources import find_cases

    layout = find_cases(data_dir)
    return [(c.case_id, c.volume, c.label) for c in layout.cases if c.split == "train"]


@dataclass
class Samples:
    """The same 2.5D samples for both pipelines: store index rows and the matching cache rows."""

    store_rows: np.ndarray | None
    cache_rows: list[baseline.CacheRow]


def pick_samples(ctx: Context, count: int) -> Samples:
    """`count` training slices drawn at random (seeded), as store rows and as cache rows."""
    rng = np.random.default_rng(ctx.settings.seed)
    by_key = {(r.case, r.z): r for r in baseline.load_cache_rows(ctx.cache_dir)}
    if ctx.store_path is None:
        keys = list(by_key)
        picks = rng.choice(len(keys), size=count, replace=count > len(keys))
        return Samples(None, [by_key[keys[i]] for i in picks])
    index = ctx.store().slice_index()
    train_rows = index.rows(split="train")
    store_rows = train_rows[rng.choice(len(train_rows), size=count, replace=count > len(train_rows))]
    cache_rows = [by_key[(index.case_id(r), int(index.z[r]))] for r in store_rows]
    return Samples(store_rows, cache_rows)


def baseline_dataset(ctx: Context, rows: list[baseline.CacheRow], augment: bool):
    """The notebook's Dataset over `rows` of its cache, with or without the preset's augmentation."""
    cfg = ctx.config()
    transform = baseline.notebook_transform(augment, float(cfg["data"]["rotate_limit"]), int(cfg["data"]["input_size"]))
    return baseline.NotebookSliceDataset(ctx.cache_dir, rows, transform)
