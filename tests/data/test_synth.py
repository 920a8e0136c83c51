"""Synthetic phantoms: the layout, determinism, real-looking NIfTI headers and CT-like Hounsfield units."""

from __future__ import annotations

import hashlib
import re

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.data import synth
from liverctl.data.phantom import render_case
from liverctl.data.synth import write_synthetic_dataset
from liverctl.errors import LiverctlError


def digests(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.nii.gz"))
    }


@pytest.fixture(scope="module")
def phantom():
    volume, label, affine = render_case(seed=3, case_number=1, size=128, slices=60)
    return volume, label, affine


def test_layout_and_files(tiny_dataset):
    names = sorted(str(p.relative_to(tiny_dataset)) for p in tiny_dataset.rglob("*.nii.gz"))
    assert names == sorted(
        [f"train/volume/volume-{i}.nii.gz" for i in range(6)]
        + [f"train/segmentation/segmentation-{i}.nii.gz" for i in range(6)]
        + ["test/volume-6.nii.gz", "test/volume-7.nii.gz"]
        + ["test_labels/segmentation-6.nii.gz", "test_labels/segmentation-7.nii.gz"]
    )
    img = nib.load(tiny_dataset / "train" / "volume" / "volume-0.nii.gz")
    lab = nib.load(tiny_dataset / "train" / "segmentation" / "segmentation-0.nii.gz")
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    assert img.shape == lab.shape == (64, 64, 24)
    np.testing.assert_allclose(img.affine, lab.affine)
    zooms = img.header.get_zooms()
    np.testing.assert_allclose(zooms, np.abs(np.diag(img.affine)[:3]), rtol=1e-6)
    assert 360 <= zooms[0] * 64 <= 440 and 1.5 <= zooms[2] <= 2.5  # field of view, slice spacing in mm
    assert img.header["sform_code"] == 1 and img.header.get_xyzt_units()[0] == "mm"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = {"cases": 1, "test_cases": 1, "size": 48, "slices": 12, "workers": 1}
    a = digests(write_synthetic_dataset(tmp_path / "a", seed=5, **kwargs).out)
    b = digests(write_synthetic_dataset(tmp_path / "b", seed=5, **kwargs).out)
    c = digests(write_synthetic_dataset(tmp_path / "c", seed=6, **kwargs).out)
    assert a == b
    assert a["train/volume/volume-0.nii.gz"] != c["train/volume/volume-0.nii.gz"]


def test_a_case_does_not_depend_on_how_many_are_written(tmp_path):
    small = write_synthetic_dataset(tmp_path / "s", cases=1, test_cases=0, size=48, slices=12, workers=1).out
    large = write_synthetic_dataset(tmp_path / "l", cases=3, test_cases=0, size=48, slices=12, workers=1).out
    key = "train/volume/volume-0.nii.gz"
    assert digests(small)[key] == digests(large)[key]


def test_looks_like_ct(phantom):
    volume, label, _ = phantom
    assert volume.dtype == np.int16 and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1}
    assert np.all(volume[:8, :8, :] == -1024)  # outside the scanner's reconstruction circle
    air = volume[56:72, 2:14, :].astype(float)  # inside the circle, in front of the body
    assert abs(air.mean() + 1000) < 10 and 8 < air.std() < 25  # air with ~15 HU noise
    liver_hu = volume[label == 1].astype(float)
    assert 40 < np.median(liver_hu) < 75
    assert (volume > 500).any()  # bone
    assert ((volume > -150) & (volume < -50)).mean() > 0.02  # fat
    # Neighbours of similar density: thresholds on HU alone cannot separate the liver.
    lo, hi = np.percentile(liver_hu, [10, 90])
    similar = ((volume >= lo) & (volume <= hi) & (label == 0)).sum()
    assert similar > 0.5 * (label == 1).sum()


def test_liver_changes_smoothly_with_slices_above_and_below(phantom):
    _, label, _ = phantom
    per_slice = label.sum(axis=(0, 1))
    has_liver = np.flatnonzero(per_slice)
    assert has_liver.size > 5
    assert np.all(np.diff(has_liver) == 1)  # one contiguous block
    assert has_liver[0] >= 8 and has_liver[-1] <= label.shape[2] - 9  # many empty slices both sides
    for z in has_liver[:-1]:
        if min(per_slice[z], per_slice[z + 1]) > 0.35 * per_slice.max():  # away from the thin tips
            a, b = label[:, :, z].astype(bool), label[:, :, z + 1].astype(bool)
            assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.7


def test_cases_differ(tiny_dataset):
    volumes = []
    for i in range(3):
        lab = nib.load(tiny_dataset / "train" / "segmentation" / f"segmentation-{i}.nii.gz")
        volumes.append(int(np.asarray(lab.dataobj).sum()))
    assert len(set(volumes)) == 3


def test_bad_arguments():
    with pytest.raises(LiverctlError, match="at least one case"):
        write_synthetic_dataset("/tmp/never", cases=0, test_cases=0)
    with pytest.raises(LiverctlError, match="too small"):
        write_synthetic_dataset("/tmp/never", size=8)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (["--size", "100000", "--slices", "100000"], "--size 100000 is too large"),
        (["--size", "30000", "--slices", "30000"], r"one 30000x30000x30000 case needs [0-9.]+ TB of memory while it is drawn"),
        (["--seed", "-1"], "--seed must be 0 or more, not -1"),
        (["--workers", "-2"], "--workers must be at least 1, not -2"),
        (["--workers", "0"], "--workers must be at least 1, not 0"),
        # 'need at least one case (--cases / --test-cases)': but there was one, and a count below 0 was the problem
        (["--test-cases", "-1"], "^error: --test-cases must be 0 or more, not -1$"),
    ],
)
def test_arguments_that_cannot_work_are_one_line(tmp_path, options, match):
    """These ended in a MemoryError or ValueError traceback (or, for --workers, were taken silently)."""
    out = tmp_path / "d"
    result = CliRunner().invoke(app, ["synth", str(out), "--cases", "1", "--test-cases", "0", *options])
    assert result.exit_code == 2, result.output
    assert re.search(match, result.stderr, re.MULTILINE) and "Traceback" not in result.output
    assert not out.exists()


def test_workers_are_as_many_cases_as_fit_in_memory(monkeypatch):
    import liverctl.data.nifti

    monkeypatch.setattr(liverctl.data.nifti, "machine_memory", lambda: 2 * 14 * 64 * 64 * 10 * 3)
    assert synth._workers_that_fit(64, 10, 8) == 3  # half the memory: three cases of 64 x 64 x 10
    assert synth._workers_that_fit(64, 10, 2) == 2


def test_command(tmp_path):
    result = CliRunner().invoke(
        app,
        ["synth", str(tmp_path / "d"), "--cases", "1", "--test-cases", "1", "--size", "40", "--slices", "8"],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 1 training case and 1 test case" in result.output
    assert (tmp_path / "d" / "test_labels" / "segmentation-1.nii.gz").is_file()


def test_a_synth_stopped_midway_leaves_no_smaller_dataset(tmp_path):
    """A synth killed after its first case (simulated: Ctrl-C as the first case is reported) left that case in
    the output folder, a dataset of 1 case of 3 that `ingest` took for the whole; run over an earlier dataset it
    left a mix of new and old cases. Now the cases move into the folder together at the end."""
    out = tmp_path / "d"

    def stop(case_id):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_synthetic_dataset(out, cases=2, test_cases=1, size=32, slices=3, workers=1, on_case=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    write_synthetic_dataset(out, cases=2, test_cases=1, size=32, slices=3, workers=1)
    before = {p: p.read_bytes() for p in out.rglob("*.nii.gz")}
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_dataset(out, cases=2, test_cases=1, size=32, slices=3, seed=1, workers=1, on_case=stop)
    assert {p: p.read_bytes() for p in out.rglob("*.nii.gz")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    summary = write_synthetic_dataset(out, cases=2, test_cases=1, size=32, slices=3, seed=1, workers=1)
    assert sorted(summary.files) == sorted(out.rglob("*.nii.gz")) and len(summary.files) == 6
    assert all(p.read_bytes() != before[p] for p in summary.files)


def test_a_synth_of_other_counts_over_an_earlier_dataset_is_refused_not_mixed(tmp_path):
    """`synth data --cases 2` over a `synth data --cases 4 --test-cases 1` said "wrote 2 training cases and 2 test
    cases" and left 4 training and 3 test volumes, case ids 2 and 3 both training and test. A synth whose files
    would all replace the earlier ones (the same command again, or more cases) still runs."""
    out = tmp_path / "d"
    options = dict(size=32, slices=3, workers=1)
    write_synthetic_dataset(out, cases=2, test_cases=1, **options)
    before = {p: p.read_bytes() for p in out.rglob("*.nii.gz")}
    with pytest.raises(LiverctlError) as info:
        write_synthetic_dataset(out, cases=1, test_cases=1, seed=1, **options)
    assert str(info.value) == (
        f"{out}: holds 4 NIfTI files of another dataset (test/volume-2.nii.gz, ...), which this synth would not "
        "replace and `liverctl ingest` would mix with the new one; give a new or empty folder, or delete the old "
        "dataset first")
    assert {p: p.read_bytes() for p in out.rglob("*.nii.gz")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    with pytest.raises(LiverctlError, match="holds 2 NIfTI files of another dataset"):  # case 2 test -> training
        write_synthetic_dataset(out, cases=3, test_cases=0, **options)
    summary = write_synthetic_dataset(out, cases=2, test_cases=1, seed=1, **options)  # the same names: replaced
    assert sorted(summary.files) == sorted(out.rglob("*.nii.gz"))
