"""Shared fixtures: a tiny synthetic dataset and its store, and the real CT samples in the Kaggle layout.

- `tiny_dataset`: `liverctl synth` output, 6 training + 2 test cases of 64 x 64 x 24 (ids 0-5 train,
  6-7 test; test labels in `test_labels/`). Session-scoped: treat it as read-only.
- `tiny_store`: that dataset ingested (path to the `.zarr` folder); read-only, copy it to modify it.
- `real_dataset`: the three volumes of `../shared/data/real/` linked into the competition layout as
  training cases `dcmqi-3slice`, `totalseg-dicom20`, `totalseg-example`; all have liver = label 1
  (dcmqi's label 2 is spine, so ingest them with `liver_labels=[1]`). Skips if the data is missing.
- `real_store`: `real_dataset` ingested with `liver_labels=[1]`.
- `loader_forkserver` (autouse): the session's forkserver, started first with DataLoader workers' imports.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A suite started as a background job (`cmd &` in a script, nohup) ignores SIGINT, and every process it starts
# inherits that: the tests that Ctrl-C an ingest then saw it run to its end. Python's own handler is reset to
# the default in a child, so the commands under test take SIGINT as from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
if not REAL_DATA.is_dir():
    REAL_DATA = Path("/work/shared/data/real")

TINY = {"cases": 6, "test_cases": 2, "size": 64, "slices": 24, "seed": 0}


@dataclass(frozen=True)
class RealDataset:
    """The real samples in the Kaggle layout under `root`."""

    root: Path
    case_ids: list[str] = field(default_factory=list)
    sources: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # id -> (ct, label) originals
    liver_labels: dict[str, list[int]] = field(default_factory=dict)  # id -> label values meaning liver


REAL_CASES = {
    "dcmqi-3slice": ("ct.nii.gz", "label.nii.gz", [1]),
    "totalseg-dicom20": ("ct.nii.gz", "liver.nii.gz", [1]),
    "totalseg-example": ("ct.nii.gz", "liver.nii.gz", [1]),
}


@pytest.fixture(scope="session", autouse=True)
def loader_forkserver():
    """This session's forkserver, started before any test with what DataLoader workers import preloaded.

    A process has one forkserver and its first pool picks what it preloads (`liverctl.workers.mp_context`).
    When an ingest or synth pool came first (tests/bench does, and it runs first), every DataLoader worker
    of the session after it imported torch and albumentations itself: 17-22 s to a loader's first batch on
    the loaded 2-core machine instead of about 1 s. Pools of any kind still start from it as they would."""
    from liverctl.data.case_pool import CASE_PRELOAD
    from liverctl.data.loaders import WORKER_PRELOAD
    from liverctl.workers import start_forkserver

    start_forkserver((*WORKER_PRELOAD, *CASE_PRELOAD))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from liverctl.data.synth import write_synthetic_dataset

    out = tmp_path_factory.mktemp("tiny") / "data"
    write_synthetic_dataset(out, workers=1, **TINY)
    return out


@pytest.fixture(scope="session")
def tiny_store(tiny_dataset, tmp_path_factory) -> Path:
    from liverctl.data.ingest import ingest_folder

    store = tmp_path_factory.mktemp("tiny-store") / "liver.zarr"
    summary = ingest_folder(tiny_dataset, store=store, workers=1)
    assert summary.ok, summary.failures
    return store


@pytest.fixture(scope="session")
def real_dataset(tmp_path_factory) -> RealDataset:
    if not all((REAL_DATA / name / ct).is_file() for name, (ct, _, _) in REAL_CASES.items()):
        pytest.skip(f"real CT samples not found in {REAL_DATA}")
    root = tmp_path_factory.mktemp("real") / "data"
    (root / "train" / "volume").mkdir(parents=True)
    (root / "train" / "segmentation").mkdir(parents=True)
    sources = {}
    for name, (ct, label, _) in REAL_CASES.items():
        sources[name] = (REAL_DATA / name / ct, REAL_DATA / name / label)
        (root / "train" / "volume" / f"volume-{name}.nii.gz").symlink_to(sources[name][0])
        (root / "train" / "segmentation" / f"segmentation-{name}.nii.gz").symlink_to(sources[name][1])
    return RealDataset(
        root=root,
        case_ids=sorted(REAL_CASES),
        sources=sources,
        liver_labels={name: labels for name, (_, _, labels) in REAL_CASES.items()},
    )


@pytest.fixture(scope="session")
def real_store(real_dataset, tmp_path_factory) -> Path:
    from liverctl.data.ingest import ingest_folder

    store = tmp_path_factory.mktemp("real-store") / "liver.zarr"
    summary = ingest_folder(real_dataset.root, store=store, liver_labels=[1], workers=1)
    assert summary.ok, summary.failures
    return store


@pytest.fixture
def poisoned_loss(monkeypatch):
    """Registers loss `poisoned` (gradient NaN at training steps 1 and 2 of each run)."""
    from train_fixtures import PoisonedGradient

    from liverctl.train.losses import LOSSES, names

    monkeypatch.setitem(LOSSES, "poisoned", lambda params: PoisonedGradient([1, 2]))
    monkeypatch.setattr(names, "LOSS_NAMES", (*names.LOSS_NAMES, "poisoned"))  # what the config accepts
    return "poisoned"


@pytest.fixture
def gpu_device():
    """"cuda" where a CUDA device is visible. Elsewhere the test skips, unless LIVERCTL_GPU_TESTS_ON_CPU=1
    gives "cpu": a dry run of the GPU tests' own code on a machine without one, before device time is spent."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("LIVERCTL_GPU_TESTS_ON_CPU") == "1":
        return "cpu"
    pytest.skip("needs CUDA (LIVERCTL_GPU_TESTS_ON_CPU=1 runs it on the CPU as a dry run)")
