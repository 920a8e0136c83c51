"""A synthetic abdominal CT dataset in the competition's layout, for demos, tests and benchmarks.

Each case is a phantom in Hounsfield units (`liverctl.data.phantom`): like real scans, many slices above and
below the liver hold no liver at all, and pixels outside the scanner's reconstruction circle hold -1024. A
case is drawn from `numpy.random.default_rng([seed, case_number])`, so it does not depend on how many
others are written, and the same seed gives the same bytes.

Written as::

    OUT/train/volume/volume-<i>.nii.gz            int16 HU, real affine and spacing (mm)
    OUT/train/segmentation/segmentation-<i>.nii.gz  uint8, 1 = liver
    OUT/test/volume-<j>.nii.gz                     test volumes (ids continue after the training ones)
    OUT/test_labels/segmentation-<j>.nii.gz        their labels, for scoring; `ingest` ignores them
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liverctl.data.phantom import render_case
from liverctl.disk import human_bytes
from liverctl.errors import LiverctlError
from liverctl.files import staged_folder, write_atomic
from liverctl.workers import default_sigterm, mp_context

GZIP_LEVEL = 1  # compression dominates the time; level 1 is ~3x faster than 6 for ~10% more bytes
# Peak memory of one case while it is drawn and written, per voxel (13.3 measured at 256 x 256 x 64): the
# float32 volume and its float32 noise, the int16 and uint8 volumes, the NIfTI bytes and their gzip.
CASE_BYTES_PER_VOXEL = 14
MAX_DIM = 32767  # a NIfTI-1 header holds each dimension in an int16


@dataclass(frozen=True)
class SynthSummary:
    out: Path
    train_cases: int
    test_cases: int
    files: list[Path]
    bytes_written: int


def _nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """A deterministic `.nii.gz` (gzip header mtime 0, no file name) of `data` with `affine`."""
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    raw = img.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=GZIP_LEVEL, mtime=0) as gz:
        gz.write(raw)
    return buf.getvalue()


@dataclass(frozen=True)
class _CaseJob:
    volume: Path
    label: Path
    seed: int
    number: int
    size: int
    slices: int


def _write_case(job: _CaseJob) -> int:
    volume, label, affine = render_case(job.seed, job.number, job.size, job.slices)
    written = 0
    for path, data in ((job.volume, volume), (job.label, label)):
        payload = _nifti_bytes(data, affine)
        write_atomic(path, payload, what=f"synthetic case {path.name}")
        written += len(payload)
    return written


def write_synthetic_dataset(
    out: str | Path,
    *,
    cases: int = 8,
    test_cases: int = 2,
    size: int = 512,
    slices: int = 150,
    seed: int = 0,
    workers: int | None = None,
    on_case: Callable[[str], None] | None = None,
) -> SynthSummary:
    """Write `cases` training and `test_cases` test phantoms under `out` (layout in the module docstring).

    `on_case(case_id)` is called after each case is written. The files are written into a hidden folder beside
    `out` and move into it together at the end (`files.staged_folder`): a synth stopped midway leaves `out` as it
    was, not a dataset of fewer cases. Existing files of the same names are replaced.
    """
    for name, value in (("--cases", cases), ("--test-cases", test_cases)):
        if value < 0:
            raise LiverctlError(f"{name} must be 0 or more, not {value}")
    if cases + test_cases == 0:
        raise LiverctlError("need at least one case (--cases / --test-cases)")
    if size < 32:
        raise LiverctlError(f"--size {size} is too small (minimum 32)")
    if slices < 3:
        raise LiverctlError(f"--slices {slices} is too small (minimum 3)")
    for name, value in (("--size", size), ("--slices", slices)):
        if value > MAX_DIM:
            raise LiverctlError(f"{name} {value} is too large (a NIfTI-1 file holds at most {MAX_DIM})")
    if seed < 0:
        raise LiverctlError(f"--seed must be 0 or more, not {seed}")
    if workers is not None and workers < 1:
        raise LiverctlError(f"--workers must be at least 1, not {workers}")
    workers = _workers_that_fit(size, slices, workers)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LiverctlError("exists and is not a folder", path=out)
    # training cases 0..cases-1, then test cases numbered after them (labels kept apart for scoring)
    splits = [
        (range(cases), Path("train") / "volume", Path("train") / "segmentation"),
        (range(cases, cases + test_cases), Path("test"), Path("test_labels")),
    ]
    cases_files = [(i, volume_dir / f"volume-{i}.nii.gz", label_dir / f"segmentation-{i}.nii.gz")
                   for numbers, volume_dir, label_dir in splits for i in numbers]
    _refuse_other_cases(out, {p for _, *files in cases_files for p in files},
                        [folder for _, *folders in splits for folder in folders])
    total = 0
    with staged_folder(out) as staged:  # every case appears at the end, together: a kill leaves no smaller dataset
        for numbers, volume_dir, label_dir in splits:
            for folder in (volume_dir, label_dir) if numbers else ():
                (staged / folder).mkdir(parents=True, exist_ok=True)
        jobs = [_CaseJob(staged / volume, staged / label, seed, i, size, slices) for i, volume, label in cases_files]
        for job, n in zip(jobs, _written(jobs, workers), strict=True):
            total += n
            if on_case:
                on_case(str(job.number))
    files = [out / p.relative_to(staged) for job in jobs for p in (job.volume, job.label)]
    return SynthSummary(out=out, train_cases=cases, test_cases=test_cases, files=files, bytes_written=total)


def _refuse_other_cases(out: Path, replaced: set[Path], folders: list[Path]) -> None:
    """Refuse an `out` whose case `folders` hold NIfTI files other than those this synth replaces (`replaced`,
    relative to `out`): a second synth with other counts into the same folder ("wrote 2 training cases and 2 test
    cases") left 4 training and 3 test volumes there, case ids 2 and 3 both training and test. The same command
    again replaces every file it finds."""
    from liverctl.data.sources.common import nifti_files
    from liverctl.plural import plural

    others = [path.relative_to(out) for folder in sorted(folders)
              for path in nifti_files(out / folder) if path.relative_to(out) not in replaced]
    if others:
        raise LiverctlError(
            f"holds {plural(len(others), 'NIfTI file')} of another dataset ({others[0]}"
            f"{', ...' if len(others) > 1 else ''}), which this synth would not replace and `liverctl ingest` would "
            "mix with the new one; give a new or empty folder, or delete the old dataset first", path=out)


def _workers_that_fit(size: int, slices: int, workers: int | None) -> int:
    """How many cases may be drawn at once (`workers`, None: all cores) in this machine's memory; raises
    `LiverctlError` when not even one fits."""
    from liverctl.data.nifti import machine_memory, memory_budget

    case = size * size * slices * CASE_BYTES_PER_VOXEL
    budget = memory_budget(1)
    if case > budget:
        raise LiverctlError(
            f"one {size}x{size}x{slices} case needs {human_bytes(case)} of memory while it is drawn, more than "
            f"the {human_bytes(budget)} this machine ({human_bytes(machine_memory())}) allows; use a smaller "
            "--size or --slices"
        )
    return max(1, min(workers or os.cpu_count() or 1, budget // case))


def _written(jobs: list[_CaseJob], workers: int) -> Iterator[int]:
    """Bytes written per job, in job order: in this process (one worker) or a process pool."""
    workers = min(workers, len(jobs))
    if workers == 1:
        yield from map(_write_case, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp_context(), initializer=_worker_init) as pool:
        yield from pool.map(_write_case, jobs)


def _worker_init() -> None:
    """A synth worker stops on Ctrl-C as a process does (the forkserver it comes from ignores SIGINT,
    `liverctl.forkserver_preload`) and on SIGTERM (`default_sigterm`)."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    default_sigterm()
