"""Ingest: exact contents, real CT, resumability, interruption, folds, and every kind of bad input."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nifti_fixtures import header_only, with_header_fields
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.data.conversion import float16_stats
from liverctl.data.ingest import ingest_folder
from liverctl.data.store import LiverStore
from liverctl.errors import LiverctlError


def store_content(path: Path) -> dict[str, str]:
    """sha256 of every file in a store (the root's `updated` time stamp left out)."""
    out = {}
    for p in sorted(path.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(path))
        data = p.read_bytes()
        if rel == "zarr.json":
            meta = json.loads(data)
            meta["attributes"].pop("updated", None)
            data = json.dumps(meta, sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture
def dataset(tiny_dataset, tmp_path) -> Path:
    """A private copy of the tiny dataset, free to modify."""
    copy = tmp_path / "data"
    shutil.copytree(tiny_dataset, copy)
    return copy


@pytest.fixture(scope="module")
def reference_store(tiny_store) -> dict[str, str]:
    return store_content(tiny_store)


# ----------------------------------------------------------------------------------------------------------
# Contents


def test_real_ct_is_stored_exactly(real_dataset, real_store):
    store = LiverStore.open(real_store)
    assert store.case_ids("train") == real_dataset.case_ids
    for case_id in real_dataset.case_ids:
        ct_path, label_path = real_dataset.sources[case_id]
        ct, lab = nib.load(ct_path), nib.load(label_path)
        meta = store.meta(case_id)
        assert tuple(meta["shape"]) == ct.shape
        assert meta["dtype"] == str(ct.get_data_dtype())
        np.testing.assert_allclose(meta["affine"], ct.affine)
        assert meta["sha256"] == hashlib.sha256(ct_path.read_bytes()).hexdigest()
        for z in range(ct.shape[2]):
            np.testing.assert_array_equal(
                store.read_slice(case_id, z), np.asarray(ct.dataobj[..., z]).astype(np.float16)
            )
            expected = (np.asarray(lab.dataobj[..., z]) == 1).astype(np.uint8)  # dcmqi: 2 is spine
            np.testing.assert_array_equal(store.read_label_slice(case_id, z), expected)
        assert meta["liver_voxels"] == int((np.asarray(lab.dataobj) == 1).sum()) > 0


def test_real_ct_with_default_liver_labels(real_dataset, tmp_path):
    """Default liver = label > 0: right for the totalseg files, wrong for dcmqi (2 = spine)."""
    summary = ingest_folder(real_dataset.root, store=tmp_path / "s.zarr", n_folds=3, workers=1)
    assert summary.ok
    store = LiverStore.open(tmp_path / "s.zarr")
    for case_id in real_dataset.case_ids:
        label = np.asarray(nib.load(real_dataset.sources[case_id][1]).dataobj)
        assert store.meta(case_id)["liver_voxels"] == int((label > 0).sum())
    dcmqi = np.asarray(nib.load(real_dataset.sources["dcmqi-3slice"][1]).dataobj)
    assert (dcmqi == 2).any()  # so the two definitions really differ there
    # ... and ingest says so, once, for that case only, with what it did
    (note,) = summary.notes
    assert note.startswith(str(real_dataset.root / "train" / "segmentation" / "segmentation-dcmqi-3slice"))
    assert "label values 0, 1, 2; without --liver-labels every value > 0 was taken as liver" in note
    assert f"({int((dcmqi > 0).sum())} voxels)" in note


def test_a_rerun_without_liver_labels_keeps_the_stores(real_dataset, tmp_path):
    """`ingest data --liver-labels 1` (dcmqi's 2 is spine), then `ingest data` again: the cases stay as they are.
    The rerun took every value > 0 as liver again and re-ingested every training case, spine included."""
    store = tmp_path / "s.zarr"
    first = run_cli("ingest", str(real_dataset.root), "--store", str(store), "--liver-labels", "1", "--workers", "1")
    assert first.exit_code == 0, first.stderr
    dry = run_cli("ingest", str(real_dataset.root), "--store", str(store), "--dry-run")
    assert "liver labels 1 (from the store: as ingested before)" in dry.stdout, dry.stdout
    again = run_cli("ingest", str(real_dataset.root), "--store", str(store), "--workers", "1")
    assert again.exit_code == 0, again.stderr
    assert "(3 train, 0 test; 0 ingested, 3 unchanged)" in again.stdout and "note:" not in again.stderr
    dcmqi = np.asarray(nib.load(real_dataset.sources["dcmqi-3slice"][1]).dataobj)
    assert LiverStore.open(store).meta("dcmqi-3slice")["liver_voxels"] == int((dcmqi == 1).sum())
    # given again, other labels still win
    other = run_cli("ingest", str(real_dataset.root), "--store", str(store), "--liver-labels", "1,2", "--workers", "1")
    assert other.exit_code == 0 and "3 ingested" in other.stdout
    assert LiverStore.open(store).meta("dcmqi-3slice")["liver_voxels"] == int((dcmqi > 0).sum())


def test_label_values_note_once_per_case_and_not_with_liver_labels(real_dataset, tmp_path):
    result = run_cli("ingest", str(real_dataset.root), "--store", str(tmp_path / "s.zarr"), "--workers", "2")
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:") and "label values" in line]
    assert len(notes) == 1 and "segmentation-dcmqi-3slice" in notes[0] and "--liver-labels 1" in notes[0]
    # a rerun that rebuilds nothing said nothing: dcmqi's spine (2) stayed liver without a word
    again = run_cli("ingest", str(real_dataset.root), "--store", str(tmp_path / "s.zarr"), "--workers", "1")
    assert "0 ingested, 3 unchanged" in again.stdout
    assert [line for line in again.stderr.splitlines() if line.startswith("note:")] == notes
    given = ingest_folder(real_dataset.root, store=tmp_path / "s1.zarr", liver_labels=[1], n_folds=3, workers=1)
    assert given.ok and given.notes == []


def test_a_label_with_structures_but_none_of_the_liver_labels_is_a_note(dataset, tmp_path):
    """--liver-labels 1 on labels that hold 2 made every case liverless, silently, exit 0; a label that is all
    background stays silent. A float 0.9999 (a resampling pipeline's float32) is label 1 (the rule of
    `liverctl.data.liver_mask`, as evaluate and postprocess read it): it went in as no liver, with this note,
    while evaluate scored the same file's liver."""
    seg = dataset / "train" / "segmentation"
    label = np.asarray(nib.load(seg / "segmentation-1.nii.gz").dataobj)
    for case, data in {"1": (label * 2).astype(np.uint8), "2": label.astype(np.float32) * np.float32(0.9999),
                       "3": np.zeros_like(label)}.items():
        grid = nib.load(dataset / "train" / "volume" / f"volume-{case}.nii.gz").affine
        save_nifti(seg / f"segmentation-{case}.nii.gz", data, grid)
    summary = ingest_folder(dataset, store=tmp_path / "s.zarr", liver_labels=[1], workers=1)
    assert summary.ok
    (two,) = summary.notes
    assert two.startswith(f"{seg / 'segmentation-1.nii.gz'}: no voxel holds a liver label (1) though ")
    assert "(label values 0, 2);" in two and "ingested without liver" in two and "--liver-labels" in two
    store = LiverStore.open(tmp_path / "s.zarr")
    assert [store.meta(c)["liver_voxels"] for c in ("1", "2", "3")] == [0, int((label == 1).sum()), 0]


def test_a_label_on_another_grid_than_its_volume_is_a_note(dataset, tmp_path):
    """Voxels pair index for index; a label whose header places them elsewhere (saved with np.eye(4), flipped,
    shifted, resampled to another voxel size) went in silently. It still goes in (a header written
    carelessly over voxels that do pair is common), with a note saying how the grids differ."""
    vol, seg = dataset / "train" / "volume", dataset / "train" / "segmentation"
    other_grid = {  # case -> what becomes of its volume's affine (LPS-like: x and y point left, posterior)
        "0": lambda a: a + 1e-6,  # float32 round-off in another writer: the same grid
        "1": lambda a: np.eye(4),
        "2": lambda a: a @ np.diag([-1.0, 1.0, 1.0, 1.0]),
        "3": lambda a: a + np.array([[0, 0, 0, 0], [0, 0, 0, 2.0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        "4": lambda a: a @ np.diag([1.0, 1.0, 2.0, 1.0]),
    }
    for case, change in other_grid.items():
        path = seg / f"segmentation-{case}.nii.gz"
        save_nifti(path, np.asarray(nib.load(path).dataobj), change(nib.load(vol / f"volume-{case}.nii.gz").affine))
    zero_row = [0.0] * 4  # a singular sform (no orientation): the case failed in a TypeError
    with_header_fields(seg / "segmentation-5.nii.gz", sform_code=1, srow_x=zero_row, srow_y=zero_row, srow_z=zero_row)
    # no placement at all (qform_code and sform_code 0, as some label tools write): nothing to disagree with; it
    # was 'orients the axes RAS where the volume's are LPS' of nibabel's affine from pixdim alone
    shutil.copy(vol / "volume-0.nii.gz", vol / "volume-9.nii.gz")
    with_header_fields(shutil.copy(seg / "segmentation-0.nii.gz", seg / "segmentation-9.nii.gz"), sform_code=0,
                       qform_code=0)
    summary = ingest_folder(dataset, store=tmp_path / "s.zarr", workers=1)
    assert summary.ok and len(summary.ingested) == 9
    notes = dict(line.split(": the label's affine ", 1) for line in summary.notes if ": the label's affine " in line)
    assert sorted(notes) == [str(seg / f"segmentation-{case}.nii.gz") for case in "12345"]
    (header,) = (line for line in summary.notes  # its qform is still set; volume-9 a copy of volume-0, noted so
                 if ": the label's affine " not in line and "more than one case id" not in line)
    assert header.startswith(f"{seg / 'segmentation-5.nii.gz'}: the header's qform and sform disagree: its qform "
                             "orients the axes LPS where the sform's is singular")
    assert notes[str(seg / "segmentation-1.nii.gz")].startswith(
        "orients the axes RAS where the volume's are LPS (volume-1.nii.gz); its voxels were paired with the "
        "volume's as stored, index for index"
    )
    assert notes[str(seg / "segmentation-2.nii.gz")].startswith("orients the axes RPS where the volume's are LPS")
    assert notes[str(seg / "segmentation-3.nii.gz")].startswith("is shifted by 2 mm from the volume's")
    assert notes[str(seg / "segmentation-5.nii.gz")].startswith("is singular (an axis has no direction)")
    spacing = nib.load(vol / "volume-4.nii.gz").header.get_zooms()
    assert notes[str(seg / "segmentation-4.nii.gz")].startswith(
        f"has voxels of {spacing[0]:.3g} x {spacing[1]:.3g} x {2 * spacing[2]:.3g} mm where the volume's are "
        f"{spacing[0]:.3g} x {spacing[1]:.3g} x {spacing[2]:.3g} mm"
    )
    assert LiverStore.open(tmp_path / "s.zarr").meta("1")["liver_voxels"] > 0


def placed(path: Path, qform: np.ndarray | None, sform: np.ndarray | None) -> Path:
    """Save `path` again with this qform and sform (None: its code 0)."""
    img = nib.load(path)
    img = nib.Nifti1Image(np.asarray(img.dataobj), None, header=img.header)
    img.set_qform(qform, code=0 if qform is None else 1)
    img.set_sform(sform, code=0 if sform is None else 1)
    nib.save(img, str(path))
    return path


def test_a_header_whose_qform_and_sform_disagree_gets_a_note_and_a_label_read_otherwise_one_too(dataset, tmp_path):
    """Both set but apart (a flip, a shift, another voxel size): nibabel reads by the sform without a word, where
    ITK-based tools have read by the qform: a mask flipped against its image in one of them. One note per such
    file; none where they agree (the synth files: both set, the same). A label whose qform/sform choice places it
    otherwise than its volume is still the grid check's (`grid_difference` of nibabel's affines)."""
    vol, seg = dataset / "train" / "volume", dataset / "train" / "segmentation"
    grid = {case: nib.load(vol / f"volume-{case}.nii.gz").affine for case in "01234"}
    flip, shift = np.diag([-1.0, 1.0, 1.0, 1.0]), np.eye(4)
    shift[1, 3] = 5.0
    zooms = nib.load(vol / "volume-2.nii.gz").header.get_zooms()
    z2 = (zooms[0], zooms[1], 2 * zooms[2])

    def mm(z):
        return " x ".join(f"{v:.3g}" for v in z)

    placed(vol / "volume-0.nii.gz", grid["0"] @ flip, grid["0"])  # qform flipped: the label agrees with the sform
    placed(vol / "volume-1.nii.gz", shift @ grid["1"], grid["1"])
    placed(vol / "volume-2.nii.gz", grid["2"] @ np.diag([1.0, 1.0, 2.0, 1.0]), grid["2"])
    placed(seg / "segmentation-3.nii.gz", grid["3"], grid["3"] @ flip)  # its qform is the volume's, its sform not
    placed(vol / "volume-4.nii.gz", grid["4"], grid["4"] @ flip)  # read by the flipped sform, its label by the
    placed(seg / "segmentation-4.nii.gz", grid["4"], None)  # qform alone: both qforms agree, nibabel's reads not
    summary = ingest_folder(dataset, store=tmp_path / "s.zarr", workers=1)
    assert summary.ok and len(summary.ingested) == 8
    said = [line.split(": ", 1) for line in summary.notes]
    disagree = {path: text.split("; ")[0] for path, text in said if "qform and sform disagree" in text}
    prefix = "the header's qform and sform disagree: its qform "
    assert nib.aff2axcodes(grid["0"]) == tuple("LPS")  # the synth files'
    assert disagree == {
        str(vol / "volume-0.nii.gz"): prefix + "orients the axes RPS where the sform's are LPS",
        str(vol / "volume-1.nii.gz"): prefix + "is shifted by 5 mm from the sform's",
        str(vol / "volume-2.nii.gz"): prefix + f"has voxels of {mm(z2)} mm where the sform's are {mm(zooms)} mm",
        str(seg / "segmentation-3.nii.gz"): prefix + "orients the axes LPS where the sform's are RPS",
        str(vol / "volume-4.nii.gz"): prefix + "orients the axes LPS where the sform's are RPS",
    }
    assert all("; read by the sform, as nibabel does (" in text for _, text in said if "qform and sform" in text)
    grids = sorted(path for path, text in said if text.startswith("the label's affine"))
    assert grids == [str(seg / "segmentation-3.nii.gz"), str(seg / "segmentation-4.nii.gz")]
    assert len(summary.notes) == len(disagree) + len(grids)


def test_a_volume_with_a_singular_affine_gets_a_note_of_its_own(dataset, tmp_path):
    """A volume whose header has no orientation (zero sform rows) went in without a word; with a label on the
    same singular grid, or as a test case without one, nothing said so. One note per such volume, naming it."""
    zero_row = [0.0] * 4
    singular = [dataset / "train" / "volume" / "volume-0.nii.gz", dataset / "train" / "segmentation" /
                "segmentation-0.nii.gz", dataset / "test" / "volume-6.nii.gz"]
    for path in singular:
        with_header_fields(path, sform_code=1, qform_code=0, srow_x=zero_row, srow_y=zero_row, srow_z=zero_row)
    summary = ingest_folder(dataset, store=tmp_path / "s.zarr", workers=1)
    assert summary.ok and len(summary.ingested) == 8
    assert sorted(line.split(": ", 1)[0] for line in summary.notes) == sorted([str(singular[0]), str(singular[2])])
    assert all("affine is singular" in line and "\n" not in line for line in summary.notes)


def test_volumes_not_in_hounsfield_units_get_one_note_each(dataset, tmp_path):
    """Training windows the values as HU (-100..200 by default): a CT whose rescale intercept was lost, an image
    already normalised or z-scored, an MRI, a header slope that scales a CT to zeros went in without a word and
    trained on one grey. One note per such volume, naming it, what it holds and what to do; the synth CT and the
    test volumes left as they were get none, and a rerun that rebuilds nothing says it again."""
    vol = dataset / "train" / "volume"
    hu = {case: np.asarray(nib.load(vol / f"volume-{case}.nii.gz").dataobj) for case in "01234"}
    changed = {
        "0": np.clip(hu["0"].astype(np.int32) + 1024, 0, 4095).astype(np.uint16),  # the intercept lost
        "1": np.clip((hu["1"] + 1000.0) / 2000.0, 0, 1).astype(np.float32),  # normalised to [0, 1]
        "2": ((hu["2"] - hu["2"].mean()) / hu["2"].std()).astype(np.float32),  # z-scored
        "3": (np.clip(hu["3"].astype(np.int32) + 1000, 0, None) // 3).astype(np.uint16),  # MRI-like: 0..600
    }
    for case, data in changed.items():
        save_nifti(vol / f"volume-{case}.nii.gz", data, nib.load(vol / f"volume-{case}.nii.gz").affine)
    with_header_fields(vol / "volume-4.nii.gz", scl_slope=1e-45, scl_inter=0.0)
    summary = ingest_folder(dataset, store=tmp_path / "s.zarr", workers=1)
    assert summary.ok and len(summary.ingested) == 8
    notes = dict(line.split(": ", 1) for line in summary.notes)
    assert sorted(notes) == [str(vol / f"volume-{case}.nii.gz") for case in "01234"], summary.notes
    lost, unit, zscored, mri, zeros = (notes[str(vol / f"volume-{case}.nii.gz")] for case in "01234")
    assert lost.startswith("values 0..") and "none below 0: a CT whose rescale intercept (-1024) was lost, or an MRI?" in lost
    assert "scl_inter = -1024" in lost and 'data.normalize = "minmax"' in lost
    assert unit.startswith("values 0..0.871, ") and "already normalised" in unit and "not Hounsfield units" in unit
    assert "already normalised" in zscored and "or z-scores" in zscored
    assert "none below 0: an MRI or another image not in HU?" in mri
    assert zeros.startswith("every voxel is 0: nothing to learn from") and "header's scl_slope (1.4013e-45)" in zeros
    assert all("\n" not in line for line in summary.notes)
    again = run_cli("ingest", str(dataset), "--store", str(tmp_path / "s.zarr"), "--workers", "1")
    assert again.exit_code == 0 and "8 unchanged" in again.stdout
    shown = [line for line in again.stderr.splitlines() if line.startswith("note: ")]
    assert len(shown) == 5 and all(line.split(": ", 2)[1] in notes for line in shown), again.stderr
    # a run that windows them as HU says so at its start (an event and a line), one that uses minmax does not
    from liverctl.data.store import LiverStore
    from liverctl.train.session import not_in_hu_note

    assert not_in_hu_note(LiverStore.open(tmp_path / "s.zarr")) == (
        "5 of the store's 6 training cases (0, 1, 2, ...) do not look like CT in Hounsfield units (see the notes "
        '`liverctl ingest` gave), yet data.normalize = "window" takes them as HU: ingest them again in HU, or set '
        'data.normalize = "minmax"')


def test_real_ct_cropped_to_its_liver_gets_no_note_and_without_its_intercept_one(real_dataset, tmp_path):
    """Real CT, whole or cropped to a box around its liver (little air, mostly soft tissue), reads as HU: no
    note. The same crops without their rescale intercept (0..4095, as from a DICOM converter that dropped it;
    dcmqi's -3024 outside the scan field then reads -2000) each get the note."""
    data = tmp_path / "data"
    for name, (ct, label) in real_dataset.sources.items():
        image, liver = nib.load(ct), np.asarray(nib.load(label).dataobj) == 1
        hu = np.asarray(image.dataobj)
        (x0, y0, z0), (x1, y1, z1) = np.argwhere(liver).min(0), np.argwhere(liver).max(0) + 1
        box = (slice(x0, x1), slice(y0, y1), slice(z0, z1))
        lost = hu.astype(np.int32) + 1024
        for case, values in {name: hu, f"{name}-box": hu[box], f"{name}-lost": lost,
                             f"{name}-box-lost": lost[box]}.items():
            save_nifti(data / "test" / f"volume-{case}.nii.gz", values.astype(np.int16), image.affine)
    summary = ingest_folder(data, store=tmp_path / "s.zarr", workers=1)
    assert summary.ok and len(summary.ingested) == 12
    noted = sorted(line.split(": ", 1)[0] for line in summary.notes)
    assert noted == sorted(str(data / "test" / f"volume-{name}{end}.nii.gz")
                           for name in real_dataset.sources for end in ("-lost", "-box-lost")), summary.notes
    assert all("a CT whose rescale intercept (-1024) was lost" in line for line in summary.notes)


def test_a_bright_mri_is_not_told_only_that_its_intercept_was_lost():
    """An MRI of 0..1500 with its background at 0 read as 'a CT whose rescale intercept (-1024) was lost?' and was
    told to set scl_inter = -1024: its statistics are a lost-intercept CT's too, so the note names both. A CT with
    voxels below 0 (dcmqi's -3024 outside the scan field, 1024 high) can only be the CT."""
    from pathlib import Path

    from liverctl.data.conversion import intensity_note

    mri = intensity_note({"min": 0, "max": 1500, "p1": 0, "p95": 1200, "p99": 1400}, Path("amos_0507.nii.gz"))
    assert "none below 0: a CT whose rescale intercept (-1024) was lost, or an MRI?" in mri
    assert 'if it is not CT in HU, train with data.normalize = "minmax"' in mri
    ct = intensity_note({"min": -2000, "max": 3000, "p1": 20, "p95": 1100, "p99": 1300}, Path("ct.nii.gz"))
    assert "a CT whose rescale intercept (-1024) was lost? " in ct and "MRI" not in ct


def test_summary_counts(tiny_dataset, tmp_path):
    summary = ingest_folder(tiny_dataset, store=tmp_path / "s.zarr", workers=1)
    assert summary.ok and summary.cases == 8 and (summary.train_cases, summary.test_cases) == (6, 2)
    assert sorted(summary.ingested) == [str(i) for i in range(8)] and summary.unchanged == []
    assert summary.slices == 8 * 24
    labels = [
        np.asarray(nib.load(p).dataobj) for p in sorted((tiny_dataset / "train" / "segmentation").iterdir())
    ]
    assert summary.liver_slices == sum(int((lab.sum(axis=(0, 1)) > 0).sum()) for lab in labels)
    sources = list((tiny_dataset / "train").rglob("*.nii.gz")) + list(
        (tiny_dataset / "test").glob("*.nii.gz")
    )
    assert summary.bytes_read == sum(p.stat().st_size for p in sources)
    assert summary.bytes_stored > 0 and summary.seconds > 0


def test_every_array_reads_back_through_plain_zarr_python(tiny_dataset, tiny_store):
    """Ingest writes the chunk files itself: zarr-python must read every array as the sources say."""
    import zarr

    root = zarr.open_group(str(tiny_store), mode="r")
    train = sorted((tiny_dataset / "train" / "volume").iterdir())
    test = sorted((tiny_dataset / "test").glob("*.nii.gz"))
    for path in train + test:
        case_id = path.name.removeprefix("volume-").removesuffix(".nii.gz")
        group = root[f"cases/{case_id}"]
        source = np.asarray(nib.load(path).dataobj)
        image = group["image"][...]
        np.testing.assert_array_equal(image.view(np.uint16), source.astype(np.float16).view(np.uint16))
        assert group.attrs["stats"] == float16_stats(source.astype(np.float16))
        if path in train:
            label = np.asarray(nib.load(tiny_dataset / "train" / "segmentation" / f"segmentation-{case_id}.nii.gz").dataobj)
            np.testing.assert_array_equal(group["label"][...], (label > 0).astype(np.uint8))
        else:
            assert "label" not in group
    store = LiverStore.open(tiny_store)
    index = store.slice_index()
    for name in ("case", "z", "neighbors", "liver_pixels", "split", "fold"):
        np.testing.assert_array_equal(root[f"index/{name}"][...], getattr(index, name))


def _array_paths(group, prefix: str = ""):
    """Paths of every array under a zarr group, walking its subgroups."""
    import zarr

    for name, node in group.members():
        if isinstance(node, zarr.Array):
            yield prefix + name
        else:
            yield from _array_paths(node, f"{prefix}{name}/")


def test_real_ct_store_reads_the_same_through_plain_zarr_python(real_dataset, real_store):
    """Every array of a store ingested from the real CT, opened with plain `zarr.open_group`, equals what
    `LiverStore` reads (its own chunk reader) and the source NIfTI voxels; no array is left unchecked."""
    import zarr

    from liverctl.data import schema

    root = zarr.open_group(str(real_store), mode="r")
    store = LiverStore.open(real_store)
    checked = set()
    for case_id in real_dataset.case_ids:
        ct_path, label_path = real_dataset.sources[case_id]
        group = root[f"{schema.CASES_GROUP}/{case_id}"]
        assert dict(group.attrs) == store.meta(case_id)
        image, label = group[schema.IMAGE], group[schema.LABEL]
        assert image.dtype == schema.IMAGE_DTYPE and label.dtype == schema.LABEL_DTYPE
        assert image.chunks == schema.slice_chunks(image.shape) == label.chunks
        voxels = image[...]
        expected = np.asarray(nib.load(ct_path).dataobj).astype(np.float16)
        np.testing.assert_array_equal(voxels.view(np.uint16), expected.view(np.uint16))
        liver = (np.asarray(nib.load(label_path).dataobj) == 1).astype(np.uint8)
        np.testing.assert_array_equal(label[...], liver)
        for z in range(image.shape[2]):
            np.testing.assert_array_equal(store.read_slice(case_id, z).view(np.uint16), voxels[..., z].view(np.uint16))
            np.testing.assert_array_equal(store.read_label_slice(case_id, z), liver[..., z])
        np.testing.assert_array_equal(store.read_image_volume(case_id).view(np.uint16), voxels.view(np.uint16))
        checked |= {f"{schema.CASES_GROUP}/{case_id}/{schema.IMAGE}", f"{schema.CASES_GROUP}/{case_id}/{schema.LABEL}"}
    index = store.slice_index()
    for name, dtype in schema.INDEX_COLUMNS.items():
        column = root[f"{schema.INDEX_GROUP}/{name}"]
        assert column.dtype == dtype
        np.testing.assert_array_equal(column[...], getattr(index, name))
        checked.add(f"{schema.INDEX_GROUP}/{name}")
    assert index.case_ids == list(root[schema.INDEX_GROUP].attrs["cases"]) == real_dataset.case_ids
    assert set(_array_paths(root)) == checked
    assert root.attrs["format"] == schema.STORE_FORMAT


def test_a_second_zarr_implementation_reads_the_store(tiny_dataset, tiny_store):
    """tensorstore's zarr3 driver (independent of zarr-python) reads the images voxel-exact."""
    ts = pytest.importorskip("tensorstore")
    for case_id in ("0", "6"):
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tiny_store / "cases" / case_id / "image")}}
        image = ts.open(spec, read=True).result().read().result()
        source = next(p for p in tiny_dataset.rglob(f"volume-{case_id}.nii.gz"))
        np.testing.assert_array_equal(image, np.asarray(nib.load(source).dataobj).astype(np.float16))
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tiny_store / "cases" / "0" / "label")}}
    label = ts.open(spec, read=True).result().read().result()
    assert label.dtype == np.uint8 and label.max() == 1


# ----------------------------------------------------------------------------------------------------------
# Resumability and interruption


def test_rerun_changes_nothing(dataset, tmp_path):
    store = tmp_path / "s.zarr"
    ingest_folder(dataset, store=store, workers=1)
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*")}
    content = store_content(store)
    again = ingest_folder(dataset, store=store, workers=1)
    assert again.ingested == [] and len(again.unchanged) == 8 and again.bytes_read == 0
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == before  # not even rewritten
    assert store_content(store) == content
    assert not (tmp_path / ".s.zarr.ingest").exists()


def test_each_case_group_metadata_is_read_once_under_the_lock(dataset, tmp_path, monkeypatch):
    """A rerun read each case's group zarr.json five times: the plan before the lock and again under it, then
    `complete_cases` at the start and at the end of the build, then the fold deal comparing each fold it had
    already read. Now once before the lock (the plan that refuses bad input before anything is made) and once
    under it, for the plan and the build alike; a built case's once as it moves in (it was read again from the
    store), and a new training case's once more where its fold is written. The stores are the same as before
    (test_parallel_ingest_equals_serial, test_rerun_changes_nothing)."""
    import pathlib

    reads: list[str] = []
    real_read_text = pathlib.Path.read_text

    def counting(path, *args, **kwargs):
        if path.name == "zarr.json" and path.parent.parent.name in ("cases", "work"):
            reads.append(path.parent.name)
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", counting)
    store = tmp_path / "s.zarr"
    summary = ingest_folder(dataset, store=store, workers=1)
    assert summary.ok and len(summary.ingested) == 8
    assert sorted(reads) == sorted([str(i) for i in range(8)] + [str(i) for i in range(6)])
    reads.clear()
    summary = ingest_folder(dataset, store=store, workers=1)
    assert summary.ok and len(summary.unchanged) == 8
    assert sorted(reads) == sorted(2 * [str(i) for i in range(8)])


def test_parallel_ingest_equals_serial(tiny_dataset, reference_store, tmp_path):
    summary = ingest_folder(tiny_dataset, store=tmp_path / "p.zarr", workers=2)
    assert summary.ok
    assert store_content(tmp_path / "p.zarr") == reference_store


def test_changed_source_is_reingested_touched_one_is_not(dataset, tmp_path):
    store = tmp_path / "s.zarr"
    ingest_folder(dataset, store=store, workers=1)
    volume = dataset / "train" / "volume" / "volume-2.nii.gz"
    os.utime(volume, ns=(time.time_ns(), time.time_ns()))  # same bytes, new mtime: checksum says unchanged
    assert ingest_folder(dataset, store=store, workers=1).ingested == []

    img = nib.load(volume)
    changed = np.asarray(img.dataobj) + np.int16(7)
    save_nifti(volume, changed.astype(np.int16), img.affine)
    summary = ingest_folder(dataset, store=store, workers=1)
    assert summary.ingested == ["2"] and len(summary.unchanged) == 7
    np.testing.assert_array_equal(
        LiverStore.open(store).read_slice("2", 5), changed[..., 5].astype(np.float16)
    )


def test_new_liver_labels_reingest_training_cases(dataset, tmp_path):
    store = tmp_path / "s.zarr"
    ingest_folder(dataset, store=store, workers=1)
    summary = ingest_folder(dataset, store=store, liver_labels=[1], workers=1)
    assert sorted(summary.ingested) == [str(i) for i in range(6)]  # test cases have no labels to redo
    assert LiverStore.open(store).attrs["liver_labels"] == [1]


def test_other_fold_count_reassigns_folds_without_reingesting(dataset, tmp_path):
    store = tmp_path / "s.zarr"
    ingest_folder(dataset, store=store, workers=1)
    summary = ingest_folder(dataset, store=store, n_folds=3, workers=1)
    assert summary.ingested == []
    opened = LiverStore.open(store)
    assert sorted(opened.folds().values()) == [0, 0, 1, 1, 2, 2]
    assert opened.attrs["n_folds"] == 3
    index = opened.slice_index()
    assert set(index.fold[index.rows(split="train")]) == {0, 1, 2}


def test_folds_left_without_a_training_case_are_a_note(dataset, tmp_path):
    """`ingest --folds 9` of 6 training cases wrote 3 empty folds without a word: a run on one of them is refused
    only at `train`. Ingest still writes the store (`train --folds all` skips empty folds) and says which are empty
    and what count leaves none; a store whose folds all hold a case gets no such note."""
    summary = ingest_folder(dataset, store=tmp_path / "nine.zarr", n_folds=9, workers=1)
    empty = sorted(set(range(9)) - set(LiverStore.open(tmp_path / "nine.zarr").folds().values()))
    assert len(empty) == 3 and summary.notes == [
        f"3 of the 9 folds ({', '.join(map(str, empty))}) hold no training case, with 6 training cases in the folds: "
        "no run can validate on them (`train --folds all` skips them); --folds 6 or fewer leaves none empty"]
    assert ingest_folder(dataset, store=tmp_path / "nine.zarr", workers=1).notes == []  # a rerun that changed nothing
    assert ingest_folder(dataset, store=tmp_path / "six.zarr", n_folds=6, workers=1).notes == []


def test_a_dry_run_says_the_folds_its_training_cases_cannot_fill(dataset, tmp_path):
    """`ingest --dry-run --folds 9` of 6 training cases said only 'folds: 9 (seed 0), dealt for a new store', where
    the ingest itself then noted 3 empty folds; the dry run now says so, counting the store's other cases too."""
    store = tmp_path / "s.zarr"
    dry = run_cli("ingest", str(dataset), "--store", str(store), "--folds", "9", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stderr.strip() == (
        "note: at least 3 of the 9 folds would hold no training case, with 6 training cases in the folds: no run can "
        "validate on them (`train --folds all` skips them); --folds 6 or fewer leaves none empty")
    assert not store.exists()  # a dry run writes nothing
    assert "note:" not in run_cli("ingest", str(dataset), "--store", str(store), "--folds", "6", "--dry-run").stderr
    # the store's cases from elsewhere stay in the folds: six more fill the nine
    other = tmp_path / "other"
    shutil.copytree(dataset, other)
    for path in other.rglob("*-*.nii.gz"):
        stem, number = path.name.split("-", 1)
        path.rename(path.with_name(f"{stem}-1{number}"))
    assert run_cli("ingest", str(other), "--store", str(store), "--workers", "1").exit_code == 0
    dry = run_cli("ingest", str(dataset), "--store", str(store), "--folds", "9", "--extra-in-folds", "--dry-run")
    assert dry.exit_code == 0 and "note:" not in dry.stderr, dry.output
    dry = run_cli("ingest", str(dataset), "--store", str(store), "--folds", "13", "--extra-in-folds", "--dry-run")
    assert "note: at least 1 of the 13 folds would hold no training case, with 12 training cases" in dry.stderr


def test_a_rerun_without_folds_keeps_the_stores_folds(dataset, tmp_path):
    """`ingest data --folds 3` then `ingest data` (to pick up a new case, say): the second run keeps the three
    folds and every case's fold; it dealt the cases onto 5 folds anew, without a word, so a run trained
    on fold 0 could no longer be resumed. Folds given again and different are dealt anew, with a note."""
    store = tmp_path / "s.zarr"
    # --dry-run says which folds it would deal, and whether the store's are kept
    assert run_cli("ingest", str(dataset), "--store", str(store), "--folds", "3", "--fold-seed", "4",
                   "--dry-run").stdout.splitlines()[-1] == "folds: 3 (seed 4), dealt for a new store"
    assert run_cli("ingest", str(dataset), "--store", str(store), "--folds", "3", "--fold-seed", "4",
                   "--workers", "1").exit_code == 0
    dry = run_cli("ingest", str(dataset), "--store", str(store), "--dry-run")
    assert dry.stdout.splitlines()[-1] == "folds: 3 (seed 4), the store's, kept"
    dry = run_cli("ingest", str(dataset), "--store", str(store), "--folds", "2", "--dry-run")
    assert dry.stdout.splitlines()[-1].startswith("folds dealt anew: the store had 3 folds (seed 4), now 2 (seed 4)")
    assert run_cli("ingest", str(dataset), "--store", str(store), "--folds", "0", "--dry-run").exit_code == 2
    before = LiverStore.open(store).folds()
    volume = nib.load(dataset / "train" / "volume" / "volume-0.nii.gz")  # a new case: not a copy, which is noted
    save_nifti(dataset / "train" / "volume" / "volume-9.nii.gz", np.asarray(volume.dataobj) + 1, volume.affine)
    shutil.copy(dataset / "train" / "segmentation" / "segmentation-0.nii.gz",
                dataset / "train" / "segmentation" / "segmentation-9.nii.gz")
    again = run_cli("ingest", str(dataset), "--store", str(store), "--workers", "1")
    assert again.exit_code == 0, again.output
    after = LiverStore.open(store)
    assert (after.attrs["n_folds"], after.attrs["fold_seed"]) == (3, 4)
    assert {c: f for c, f in after.folds().items() if c != "9"} == before
    assert 0 <= after.folds()["9"] < 3
    assert "note:" not in again.stderr

    changed = run_cli("ingest", str(dataset), "--store", str(store), "--folds", "2", "--workers", "1")
    assert changed.exit_code == 0, changed.output
    assert LiverStore.open(store).attrs["n_folds"] == 2
    notes = [line for line in changed.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: folds dealt anew: the store had 3 folds (seed 4), now 2 (seed 4); a run trained on the "
                     "old folds cannot be resumed on this store"]


def test_leftovers_of_an_interrupted_run_are_cleaned(tiny_dataset, reference_store, tmp_path):
    store = tmp_path / "liver.zarr"
    ingest_folder(tiny_dataset, store=store, workers=1)
    # What a killed run can leave: a half-written case in the work folder, a case not marked complete
    # (e.g. copied in by hand), a case whose folds were never set, a missing index.
    work = tmp_path / ".liver.zarr.ingest" / "work" / "3"
    shutil.copytree(store / "cases" / "3", work)
    shutil.rmtree(work / "image" / "c")
    shutil.copytree(store / "cases" / "4", store / "cases" / "4-partial")
    meta = json.loads((store / "cases" / "4-partial" / "zarr.json").read_text())
    meta["attributes"]["complete"] = False
    (store / "cases" / "4-partial" / "zarr.json").write_text(json.dumps(meta))
    shutil.rmtree(store / "cases" / "5")
    shutil.rmtree(store / "index")
    meta = json.loads((store / "cases" / "1" / "zarr.json").read_text())
    meta["attributes"]["fold"] = None
    (store / "cases" / "1" / "zarr.json").write_text(json.dumps(meta))

    summary = ingest_folder(tiny_dataset, store=store, workers=1)
    assert summary.ok and summary.ingested == ["5"]
    assert store_content(store) == reference_store
    assert not work.exists()


def test_a_run_that_dies_after_replacing_a_case_leaves_no_index_that_describes_the_old_one(
    dataset, tmp_path, monkeypatch
):
    store = tmp_path / "s.zarr"
    ingest_folder(dataset, store=store, workers=1)
    volume, label = dataset / "train" / "volume" / "volume-2.nii.gz", dataset / "train" / "segmentation" / "segmentation-2.nii.gz"
    for path in (volume, label):  # the source changes: 10 slices instead of 24
        img = nib.load(path)
        save_nifti(path, np.asarray(img.dataobj)[:, :, :10].copy(), img.affine)

    import liverctl.data.ingest as ingest_module

    def killed(*args, **kwargs):  # the run dies after committing the new case 2, before the index is written
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ingest_module, "write_index", killed)
        with pytest.raises(KeyboardInterrupt):
            ingest_folder(dataset, store=store, workers=1)
    assert json.loads((store / "cases" / "2" / "zarr.json").read_text())["attributes"]["shape"][2] == 10
    # The old index said case 2 has 24 slices: training would read slice 10 and fail in a worker.
    with pytest.raises(LiverctlError, match="ingest did not finish"):
        LiverStore.open(store)
    result = run_cli("train", "--preset", "demo", "--store", str(store), "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "ingest did not finish" in error_lines(result)[0]

    summary = ingest_folder(dataset, store=store, workers=1)  # the rerun puts it right
    assert summary.ok and summary.ingested == []
    opened = LiverStore.open(store)
    assert opened.slice_index().rows().size == 7 * 24 + 10
    assert opened.read_stack("2", 9).shape == (3, 64, 64)


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _ingest_signalled_mid_run(data: Path, store: Path, sig: int, all_cases: set[str]) -> tuple[int, str] | None:
    """Run `liverctl ingest` in its own process group and signal the group while some cases are in the store
    and another is still being built in the work folder. (returncode, stderr); None when the signal came
    too late (every case was in by then: a slow poll on a busy machine), to be tried again."""
    cmd = [sys.executable, "-m", "liverctl.cli", "ingest", str(data), "--store", str(store), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    work = store.parent / f".{store.name}.ingest" / "work"
    cases = store / "cases"

    def some_cases_done_another_being_built() -> bool:
        if proc.poll() is not None:
            return True
        try:  # the work folder also holds the index before it moves in: only a case's folder counts
            done = {p.name for p in cases.iterdir() if p.is_dir()} if cases.is_dir() else set()
            building = {p.name for p in work.iterdir()} & (all_cases - done) if work.is_dir() else set()
            return bool(done) and bool(building)
        except FileNotFoundError:  # the work folder is removed when ingest ends
            return False

    _wait_for(some_cases_done_another_being_built, timeout=60)
    assert proc.poll() is None, "the ingest finished before the signal could be sent"
    # Like Ctrl-C in a terminal (or a job killed by its scheduler): the whole process group.
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    if {p.name for p in cases.iterdir() if p.is_dir()} >= all_cases:
        return None
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_or_interrupted_ingest_then_rerun_is_identical(tiny_dataset, reference_store, tmp_path, sig):
    all_cases = {key.split("/")[1] for key in reference_store if key.startswith("cases/") and key.count("/") == 2}
    for attempt in range(3):  # the signal must arrive mid-ingest: some cases in the store, others not
        store = tmp_path / f"try{attempt}" / "liver.zarr"
        outcome = _ingest_signalled_mid_run(tiny_dataset, store, sig, all_cases)
        if outcome is not None:
            break
    assert outcome is not None, "three times the signal came after the last case was in"
    returncode, err = outcome
    assert "Traceback" not in err, err[-3000:]  # seen once under load (helper J), traceback not kept then
    if sig == signal.SIGKILL:
        assert returncode == -signal.SIGKILL
    else:
        assert returncode == 130 and "interrupted" in err, (returncode, err[-2000:])
        # the lock blosc makes in each worker was left registered by the stopped workers (liverctl.workers)
        assert "leaked semaphore" not in err, err[-2000:]
    stored = [d for d in (store / "cases").iterdir() if d.is_dir()]
    assert stored  # some cases had made it before the signal ...
    for case_dir in stored:  # ... and whatever made it into the store is complete
        assert json.loads((case_dir / "zarr.json").read_text())["attributes"]["complete"] is True
    missing = all_cases - {d.name for d in stored}
    assert missing  # ... but not all of them

    summary = ingest_folder(tiny_dataset, store=store, workers=2)
    assert summary.ok
    assert set(summary.ingested) == missing  # the rerun does exactly what the signal left undone
    assert store_content(store) == reference_store


# ----------------------------------------------------------------------------------------------------------
# Bad input


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_test_volume_in_another_format_is_a_note(dataset, tmp_path):
    (dataset / "test" / "volume-99.mha").write_bytes(b"ObjectType = Image\n")
    result = run_cli("ingest", str(dataset), "--store", str(tmp_path / "s.zarr"), "--workers", "1")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {dataset / 'test'}: 1 file that is not NIfTI (.nii, .nii.gz) left out: volume-99.mha"]


def test_a_header_nibabel_fixes_is_a_note_naming_the_file(dataset, tmp_path, capfd):
    """A zero voxel size: nibabel sets it to 1 and said so on stderr, twice, without the file's name."""
    volume = dataset / "train" / "volume" / "volume-0.nii.gz"
    pixdim = nib.load(volume).header["pixdim"].copy()
    pixdim[1] = 0
    with_header_fields(volume, pixdim=pixdim)
    summary = ingest_folder(dataset, store=tmp_path / "s.zarr", workers=1)
    assert summary.ok
    fixed, qform = summary.notes  # the zero size is the qform's (pixdim), not the sform's: they disagree
    assert fixed == f"{volume}: nibabel fixed the header as it read it: pixdim[1,2,3] should be non-zero; setting 0 dims to 1"
    assert qform.startswith(f"{volume}: the header's qform and sform disagree: its qform has voxels of 1 x ")
    assert "pixdim" not in capfd.readouterr().err
    assert LiverStore.open(tmp_path / "s.zarr").meta("0")["spacing"][0] == 1.0


def test_every_bad_input_is_reported_and_good_cases_still_ingested(dataset, tmp_path):
    vol, seg, test = dataset / "train" / "volume", dataset / "train" / "segmentation", dataset / "test"
    good = nib.load(vol / "volume-0.nii.gz")
    good_image, good_label = (
        np.asarray(good.dataobj),
        np.asarray(nib.load(seg / "segmentation-0.nii.gz").dataobj),
    )
    bad = {}
    # Not NIfTI at all.
    (vol / "volume-text.nii.gz").write_text("this is not an image\n")
    shutil.copy(seg / "segmentation-0.nii.gz", seg / "segmentation-text.nii.gz")
    bad["text"] = (vol / "volume-text.nii.gz", "cannot be read as NIfTI")
    # Truncated .nii.gz and a corrupt one (bytes flipped in the middle of the compressed stream).
    raw = (vol / "volume-1.nii.gz").read_bytes()
    (vol / "volume-1.nii.gz").write_bytes(raw[: len(raw) // 2])
    bad["truncated"] = (vol / "volume-1.nii.gz", "")
    raw = (vol / "volume-2.nii.gz").read_bytes()
    middle = len(raw) // 2
    (vol / "volume-2.nii.gz").write_bytes(
        raw[:middle] + bytes(b ^ 0xFF for b in raw[middle : middle + 64]) + raw[middle + 64 :]
    )
    bad["corrupt"] = (vol / "volume-2.nii.gz", "")
    # Volume and label of different shapes.
    save_nifti(seg / "segmentation-3.nii.gz", good_label[:, :, :20])
    bad["shape"] = (seg / "segmentation-3.nii.gz", "differs from its volume")
    # A label without volume, a training volume without label.
    save_nifti(seg / "segmentation-orphan.nii.gz", good_label)
    bad["orphan label"] = (seg / "segmentation-orphan.nii.gz", "has no volume")
    save_nifti(vol / "volume-nolabel.nii.gz", good_image)
    bad["no label"] = (vol / "volume-nolabel.nii.gz", "has no label")
    # Not 3D: a 4D series and a 2D image (a trailing axis of length 1 is fine).
    save_nifti(vol / "volume-4d.nii.gz", np.stack([good_image, good_image], axis=-1))
    save_nifti(seg / "segmentation-4d.nii.gz", good_label)
    bad["4d"] = (vol / "volume-4d.nii.gz", "is 4D")
    save_nifti(vol / "volume-2d.nii.gz", good_image[:, :, 0])
    save_nifti(seg / "segmentation-2d.nii.gz", good_label[:, :, 0])
    bad["2d"] = (vol / "volume-2d.nii.gz", "is 2D")
    save_nifti(vol / "volume-trailing1.nii.gz", good_image[..., None])
    save_nifti(seg / "segmentation-trailing1.nii.gz", good_label[..., None])
    # Non-finite voxels, and values float16 cannot hold.
    nan_image = good_image.astype(np.float32)
    nan_image[3, 4, 5] = np.nan
    save_nifti(vol / "volume-nan.nii.gz", nan_image)
    save_nifti(seg / "segmentation-nan.nii.gz", good_label)
    bad["nan"] = (vol / "volume-nan.nii.gz", "1 non-finite image voxels")
    huge = good_image.astype(np.float32)
    huge[0, 0, 0] = 1e6
    save_nifti(vol / "volume-huge.nii.gz", huge)
    save_nifti(seg / "segmentation-huge.nii.gz", good_label)
    bad["huge"] = (vol / "volume-huge.nii.gz", "beyond float16's range")
    # A header whose affine is NaN (the voxels themselves read fine).
    with_header_fields(save_nifti(vol / "volume-nanaffine.nii.gz", good_image), srow_x=[np.nan, 0, 0, 0], sform_code=1)
    save_nifti(seg / "segmentation-nanaffine.nii.gz", good_label)
    bad["nan affine"] = (vol / "volume-nanaffine.nii.gz", "header's affine (sform) holds NaN or infinity")
    # A link to a file that is gone.
    (vol / "volume-dangling.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    save_nifti(seg / "segmentation-dangling.nii.gz", good_label)
    bad["dangling"] = (vol / "volume-dangling.nii.gz", "a link that leads to no file")  # was 'No such file
    # Two files with the same case id.
    shutil.copy(test / "volume-6.nii.gz", test / "volume-6.nii")
    bad["duplicate"] = (test / "volume-6.nii", "is also used by volume-6.nii.gz")

    store = tmp_path / "s.zarr"
    result = run_cli("ingest", str(dataset), "--store", str(store), "--workers", "2")
    assert result.exit_code == 2
    lines = error_lines(result)
    for what, (path, message) in bad.items():
        hits = [line for line in lines if str(path) in line]
        assert hits, f"{what}: no error line names {path}:\n{result.stderr}"
        assert message in hits[0], f"{what}: {hits[0]}"
    assert "problems above" in lines[-1]

    opened = LiverStore.open(store)  # the good cases are in and usable
    assert opened.case_ids() == ["0", "4", "5", "7", "trailing1"]
    assert opened.read_stack("trailing1", 3).shape == (3, 64, 64)
    np.testing.assert_array_equal(opened.read_slice("trailing1", 9), good_image[..., 9].astype(np.float16))
    assert sorted(p.name for p in (store / "cases").iterdir() if p.is_dir()) == opened.case_ids()


def test_truncated_and_corrupt_gzip_messages(tmp_path, tiny_dataset):
    raw = (tiny_dataset / "test" / "volume-7.nii.gz").read_bytes()
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "volume-a.nii.gz").write_bytes(raw[:200])  # header only partly there
    (tmp_path / "test" / "volume-b.nii.gz").write_bytes(raw[: len(raw) - 5000])
    (tmp_path / "test" / "volume-c.nii").write_bytes(gzip.decompress(raw)[:-4096])  # short .nii
    summary = ingest_folder(tmp_path, store=tmp_path / "s.zarr", workers=1)
    assert summary.ingested == [] and len(summary.failures) == 3
    for failure, name in zip(sorted(summary.failures), ["volume-a", "volume-b", "volume-c"], strict=True):
        assert name in failure and "\n" not in failure
        assert "NIfTI" in failure or "truncated" in failure
    assert "header claims 64 x 64 x 24 int16 voxels" in sorted(summary.failures)[2]  # refused before reading


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_missing_or_empty_data_folder(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    result = run_cli("ingest", str(tmp_path / folder), "--store", str(tmp_path / "s.zarr"))
    assert result.exit_code == 2
    assert len(error_lines(result)) == 1 and str(tmp_path / folder) in error_lines(result)[0]
    assert not (tmp_path / "s.zarr").exists() or folder == "empty"


@pytest.mark.parametrize(("option", "value"), [("--workers", "0"), ("--workers", "-3")])
def test_counts_below_one_are_refused_before_the_store_exists(tiny_dataset, tmp_path, option, value):
    result = run_cli("ingest", str(tiny_dataset), "--store", str(tmp_path / "s.zarr"), option, value)
    assert result.exit_code == 2
    assert error_lines(result) == [f"error: {option} must be at least 1, not {value}"]
    assert not (tmp_path / "s.zarr").exists()


def test_store_path_that_is_not_a_store(tiny_dataset, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("mine")
    with pytest.raises(LiverctlError, match="not a liverctl store"):
        ingest_folder(tiny_dataset, store=tmp_path / "other", workers=1)
    assert (tmp_path / "other" / "file.txt").read_text() == "mine"


def test_a_store_of_another_format_version_is_named(tiny_dataset, tmp_path):
    from liverctl.data.schema import update_attrs

    store = tmp_path / "s.zarr"
    ingest_folder(tiny_dataset, store=store, workers=1)
    update_attrs(store, {"format": "liverctl-store/2"})
    with pytest.raises(LiverctlError, match=r"is a store of format 'liverctl-store/2', which this liverctl "
                                            r"\('liverctl-store/1'\) cannot update"):
        ingest_folder(tiny_dataset, store=store, workers=1)


def test_a_second_ingest_into_the_same_store_is_refused(tiny_dataset, tmp_path):
    import fcntl

    store = tmp_path / "s.zarr"
    ingest_folder(tiny_dataset, store=store, workers=1)
    lock_dir = tmp_path / ".s.zarr.ingest"
    lock_dir.mkdir()
    with open(lock_dir / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running ingest holds it
        with pytest.raises(LiverctlError, match="another `liverctl ingest` is writing this store"):
            ingest_folder(tiny_dataset, store=store, workers=1)
    assert LiverStore.open(store).case_ids() == [str(i) for i in range(8)]


def test_two_ingests_starting_at_once_into_a_new_store_one_is_told_to_wait(tiny_dataset, tmp_path):
    """The first of two ingests started together had made the store's folder but not yet its zarr.json (the
    atomic write's temp file beside it): the second took that for someone else's folder, 'exists and is not a
    liverctl store; choose another --store'. The store is checked inside the lock; a refused or failed run
    leaves no lock folder beside the store."""
    from liverctl.data.store_writer import exclusive_work_dir

    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / ".zarr.json.tmp").write_text("{")  # the first ingest, mid-way through creating the store
    with exclusive_work_dir(store):  # ... holding the lock
        with pytest.raises(LiverctlError, match="another `liverctl ingest` is writing this store"):
            ingest_folder(tiny_dataset, store=store, workers=1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "file.txt").write_text("mine")
    with pytest.raises(LiverctlError, match="not a liverctl store"):
        ingest_folder(tiny_dataset, store=tmp_path / "mine", workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "s.zarr"]


def test_an_ingest_that_ends_while_the_next_one_takes_its_lock_leaves_one_holder(tmp_path, monkeypatch):
    """An ingest that ends removes its lock folder, then lets go of its lock. The next one had opened the lock
    file just before and locked it just after: it held a lock on a removed file (and its work folder was gone),
    while a third could make and lock a new file: two writers. Now the lock taken is always on the file at the
    path, and a second ingest is still refused while the first holds it."""
    import fcntl
    import shutil

    from liverctl.data.store_writer import exclusive_work_dir

    store = tmp_path / "s.zarr"
    base = tmp_path / ".s.zarr.ingest"
    real_flock, calls = fcntl.flock, []

    def flock(fd, op):
        calls.append(op)
        if len(calls) == 1:  # the ending ingest removes its folder and lets go between our open and our flock
            shutil.rmtree(base)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    with exclusive_work_dir(store) as work:
        assert work.is_dir() and work.parent == base
        held = os.stat(base / "lock").st_ino
        monkeypatch.setattr(fcntl, "flock", real_flock)
        with pytest.raises(LiverctlError, match="another `liverctl ingest` is writing this store"):
            with exclusive_work_dir(store):
                pass
    assert len(calls) == 2 and held
    assert not base.exists()


def test_a_store_opened_while_an_ingest_changes_it_says_to_wait_for_the_ingest(dataset, tmp_path, monkeypatch):
    """An ingest that changes a case moves the store's index out before its first change and swaps a new one
    in at its end. A `train` or `submit` opening the store meanwhile was told "store has no slice index (ingest
    did not finish); run `liverctl ingest` again", which the running ingest then refuses (17,769 of 18,069 opens
    during 5 ingests in a loop). Now it is told that an ingest is writing the store, to wait for it."""
    import threading

    from liverctl.data import ingest

    store = tmp_path / "s.zarr"
    ingest_folder(dataset, store=store, workers=1)
    committing, resume, failures = threading.Event(), threading.Event(), []
    real_commit = ingest.commit_case

    def paused_commit(*args):  # the ingest has moved the index out and is about to change its first case
        committing.set()
        assert resume.wait(60)
        real_commit(*args)

    def rerun():
        try:
            ingest_folder(dataset, store=store, liver_labels=[1], workers=1)  # new labels: every training case anew
        except BaseException as exc:  # noqa: BLE001 - shown by the assert below
            failures.append(exc)
            committing.set()

    monkeypatch.setattr(ingest, "commit_case", paused_commit)
    thread = threading.Thread(target=rerun)
    thread.start()
    try:
        assert committing.wait(60) and not failures, failures
        with pytest.raises(LiverctlError, match=r"s.zarr: `liverctl ingest` is writing this store now; wait for it to end"):
            LiverStore.open(store)
    finally:
        resume.set()
        thread.join()
    assert not failures, failures
    assert LiverStore.open(store).attrs["liver_labels"] == [1]


def test_a_store_opened_as_an_ingest_swaps_its_index_in_opens_the_new_index(dataset, tmp_path, monkeypatch):
    """A reader that read the index's attributes before an ingest swapped a new index in, and its columns after,
    failed on a store that was whole: "slice index column 'fold' (72 rows) does not match the cases it indexes
    (72 slices); the store is damaged", "slice index column 'split' is missing", or a KeyError traceback (15 of
    94,184 opens during 29 ingests in a loop). The open is tried once more when no ingest holds the store."""
    store = tmp_path / "s.zarr"
    aside = tmp_path / "aside"
    aside.mkdir()
    for folder, name in (("volume", "volume-5.nii.gz"), ("segmentation", "segmentation-5.nii.gz")):
        os.rename(dataset / "train" / folder / name, aside / name)
    ingest_folder(dataset, store=store, workers=1)
    real_meta, swapped = LiverStore._index_meta, []

    def index_meta_then_an_ingest(self):
        attrs = real_meta(self)
        if not swapped:  # between the index's attributes and its columns, an ingest adds case 5 and ends
            swapped.append(True)
            for folder, name in (("volume", "volume-5.nii.gz"), ("segmentation", "segmentation-5.nii.gz")):
                os.rename(aside / name, dataset / "train" / folder / name)
            assert ingest_folder(dataset, store=store, workers=1).ingested == ["5"]
        return attrs

    monkeypatch.setattr(LiverStore, "_index_meta", index_meta_then_an_ingest)
    assert "5" in LiverStore.open(store).case_ids("train")
    assert swapped


def test_a_case_an_ingest_replaces_under_an_open_store_is_said_replaced_not_damaged(dataset, tmp_path):
    """A `train` or `submit` that had opened the store, reading a case an ingest then built anew (other liver
    labels), was told "chunk file of slice 1 of case 'dcmqi-3slice' has 4909 bytes where ingest wrote 3664 (cut
    short or overwritten); the store is damaged: run `liverctl ingest` again ..." (98 of 15,120 reads during 6
    ingests of the real CT), of a whole store, and again after the ingest had ended. Now the case is said to
    have been replaced, and to run the command again."""
    store = tmp_path / "s.zarr"
    ingest_folder(dataset, store=store, workers=1)
    reader = LiverStore.open(store)
    case = reader.case_ids("train")[0]
    before = reader.read_label_volume(case)
    assert ingest_folder(dataset, store=store, liver_labels=[2], workers=1).ingested  # every training case anew
    with pytest.raises(LiverctlError) as replaced:
        reader.read_label_volume(case)
    assert str(replaced.value) == (f"{store / 'cases' / case}: case {case!r} was replaced while this read it: "
                                   "`liverctl ingest` has built it anew; run this again")
    assert not np.array_equal(LiverStore.open(store).read_label_volume(case), before)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--folds", "-3", "--folds must be from 2 to 128, not -3"),
        ("--folds", "0", "--folds must be from 2 to 128, not 0"),
        # was accepted, and `train` refused the store it wrote: "no training cases outside fold 0"
        ("--folds", "1", "--folds 1 puts every training case in fold 0, the one validated on, leaving none to train "
                         "on: give 2 or more (--folds 5 is the default)"),
        ("--folds", "129", "--folds must be from 2 to 128, not 129"),  # fold 168 was stored as -88 in the index
        ("--folds", "99999999999999999999", "--folds must be from 2 to 128"),  # OverflowError traceback
        ("--fold-seed", "-5", "--fold-seed must be 0 or more, not -5"),  # numpy's ValueError traceback
    ],
)
def test_folds_the_index_cannot_hold_and_a_negative_fold_seed_are_one_line(tiny_dataset, tmp_path, option, value,
                                                                            message):
    result = run_cli("ingest", str(tiny_dataset), "--store", str(tmp_path / "s.zarr"), "--workers", "1", option, value)
    lines = error_lines(result)
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.output
    assert not (tmp_path / "s.zarr").exists()


def test_bad_liver_labels_option(tiny_dataset, tmp_path):
    result = run_cli(
        "ingest", str(tiny_dataset), "--store", str(tmp_path / "s.zarr"), "--liver-labels", "liver"
    )
    assert result.exit_code == 2 and "--liver-labels" in error_lines(result)[0]


def test_command_summary(tiny_dataset, tmp_path):
    result = run_cli("ingest", str(tiny_dataset), "--store", str(tmp_path / "s.zarr"), "--workers", "1")
    assert result.exit_code == 0, result.stderr
    assert "8 cases (6 train, 2 test; 8 ingested, 0 unchanged), 192 slices" in result.stdout
    again = run_cli("ingest", str(tiny_dataset), "--store", str(tmp_path / "s.zarr"), "--workers", "1")
    assert "0 ingested, 8 unchanged" in again.stdout


# ----------------------------------------------------------------------------------------------------------
# Bounded inputs, workers killed by the OS, disk full


def test_absurd_headers_are_refused_and_every_other_case_ingested(dataset, tmp_path):
    test = dataset / "test"
    absurd = header_only(test / "volume-absurd.nii.gz", [2048, 2048, 256])
    cube = header_only(test / "volume-cube.nii.gz", [30000, 30000, 30000])
    negative = header_only(test / "volume-negative.nii.gz", [64, -64, 24])
    result = run_cli("ingest", str(dataset), "--store", str(tmp_path / "s.zarr"), "--workers", "2")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 4 and "Traceback" not in result.stderr
    assert f"{absurd}: header claims 2048 x 2048 x 256 int16 voxels" in result.stderr
    assert f"{cube}: header claims 30000 x 30000 x 30000 int16 voxels" in result.stderr
    assert f"{negative}: header claims shape (64 x -64 x 24)" in result.stderr
    assert LiverStore.open(tmp_path / "s.zarr").case_ids() == [str(i) for i in range(8)]


def _fork_workers(monkeypatch) -> None:
    """Workers start with fork in this test, so that they inherit its monkeypatched faults (the product's
    forkserver workers import liverctl afresh). Python 3.12+ warns about fork in a threaded process: that
    risk is this test's own choice, so its warning is silenced for this test only."""
    import warnings

    import liverctl.workers

    monkeypatch.setattr(liverctl.workers, "start_method", lambda: "fork")
    warnings.filterwarnings("ignore", message=r"This process .* is multi-threaded, use of fork\(\)",
                            category=DeprecationWarning)


def _kill_own_worker_for(monkeypatch, *case_ids: str) -> None:
    """Make the worker that reads one of `case_ids` die as the OOM killer kills it (workers are forked)."""
    import liverctl.data.case_writer as case_writer

    _fork_workers(monkeypatch)
    read_case = case_writer.read_case

    def read_or_die(case, liver_labels, workers=1):
        if case.case_id in case_ids:
            os.kill(os.getpid(), signal.SIGKILL)
        return read_case(case, liver_labels, workers)

    monkeypatch.setattr(case_writer, "read_case", read_or_die)


@pytest.mark.parametrize("killers", [("3",), ("2", "6")])
def test_a_worker_killed_by_the_os_fails_only_its_case(tiny_dataset, tiny_store, tmp_path, monkeypatch, killers):
    _kill_own_worker_for(monkeypatch, *killers)
    summary = ingest_folder(tiny_dataset, store=tmp_path / "s.zarr", workers=2)
    assert sorted(summary.ingested) == sorted(set(map(str, range(8))) - set(killers))
    assert len(summary.failures) == len(killers)
    for case_id in killers:
        expected = f"-{case_id}.nii.gz: worker killed while ingesting case {case_id}, probably out of memory"
        assert sum(expected in line for line in summary.failures) == 1, summary.failures
    folds_before = LiverStore.open(tmp_path / "s.zarr").folds()
    monkeypatch.undo()  # the next run ingests the killed cases: their voxels are as if nothing happened
    again = ingest_folder(tiny_dataset, store=tmp_path / "s.zarr", workers=2)
    assert again.ok and sorted(again.ingested) == sorted(killers)
    store, reference = LiverStore.open(tmp_path / "s.zarr"), LiverStore.open(tiny_store)
    for case_id in map(str, range(8)):
        assert np.array_equal(store.read_image_volume(case_id), reference.read_image_volume(case_id))
        assert store.meta(case_id)["split"] == reference.meta(case_id)["split"]
        if case_id in reference.case_ids("train"):
            assert np.array_equal(store.read_label_volume(case_id), reference.read_label_volume(case_id))
    # Folds of cases already in the store never move (issue 15); the late cases are dealt into the folds.
    folds = store.folds()
    assert {c: folds[c] for c in folds_before} == folds_before
    assert set(folds) == set(reference.folds()) and all(0 <= fold < 5 for fold in folds.values())


def test_a_killed_worker_is_one_line_in_the_command(tiny_dataset, tmp_path, monkeypatch):
    _kill_own_worker_for(monkeypatch, "4")
    result = run_cli("ingest", str(tiny_dataset), "--store", str(tmp_path / "s.zarr"), "--workers", "2")
    assert result.exit_code == 2 and "Traceback" not in result.stderr and "BrokenProcessPool" not in result.stderr
    lines = error_lines(result)
    assert len(lines) == 2 and "worker killed while ingesting case 4, probably out of memory" in lines[0]
    assert "7 ingested" in result.stdout


def _fill_disk_after(monkeypatch, chunks: int, wrapped: bool = False) -> None:
    """Chunk file writes (ingest writes them itself) raise ENOSPC once `chunks` of them are written
    (metadata is still written); `wrapped`: as a RuntimeError raised over the OSError, the way torch.save
    reports a full disk."""
    import errno

    import liverctl.data.case_writer

    put = liverctl.data.case_writer.write_chunk_file
    written = [0]

    def put_or_full(path, data):
        written[0] += 1
        if written[0] > chunks and not wrapped:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        if written[0] > chunks:
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            except OSError:
                raise RuntimeError("write failed")  # noqa: B904 (the OSError stays its context, as in torch)
        return put(path, data)

    monkeypatch.setattr(liverctl.data.case_writer, "write_chunk_file", put_or_full)


@pytest.mark.parametrize(("workers", "wrapped"), [("1", False), ("2", False), ("1", True)])
def test_disk_full_is_one_line_and_leaves_nothing_that_looks_complete(tiny_dataset, tmp_path, monkeypatch, workers,
                                                                     wrapped):
    store = tmp_path / "s.zarr"
    _fork_workers(monkeypatch)
    _fill_disk_after(monkeypatch, chunks=24 * 2 + 5, wrapped=wrapped)  # a case or two fit, then the disk is full
    result = run_cli("ingest", str(tiny_dataset), "--store", str(store), "--workers", workers)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    (line,) = error_lines(result)
    assert re.match(r"error: no space left on /\S* while writing case \w+ \(.*volume-\w+\.nii\.gz\); ", line), line
    assert "free some space and run ingest again" in line
    assert not (tmp_path / ".s.zarr.ingest" / "work").exists()  # the half-written case is gone
    cases = sorted(p for p in (store / "cases").iterdir() if p.is_dir())
    full_case = re.search(r"while writing case (\w+)", line).group(1)
    assert len(cases) < 8 and full_case not in {p.name for p in cases}
    for case_dir in cases:  # whatever is in the store is whole
        assert json.loads((case_dir / "zarr.json").read_text())["attributes"]["complete"] is True
        assert len(list((case_dir / "image" / "c").rglob("*"))) > 0

    monkeypatch.undo()  # space freed: the next run finishes the store
    summary = ingest_folder(tiny_dataset, store=store, workers=1)
    assert summary.ok and len(summary.ingested) == 8 - len(cases)


def test_memory_cap_is_shared_by_the_workers(tiny_dataset, tmp_path, monkeypatch):
    import liverctl.data.nifti

    _fork_workers(monkeypatch)
    monkeypatch.setattr(liverctl.data.nifti, "machine_memory", lambda: 600 << 10)  # a 64x64x24 int16 volume: 192 KB
    two = ingest_folder(tiny_dataset, store=tmp_path / "two.zarr", workers=2)
    assert two.ingested == [] and len(two.failures) == 8
    assert all("more than the 150.0 KB this machine" in line and "use fewer --workers" in line for line in two.failures)
    one = ingest_folder(tiny_dataset, store=tmp_path / "one.zarr", workers=1)
    assert one.ok and len(one.ingested) == 8


def test_free_space_check_refuses_a_store_larger_than_its_disk(tiny_dataset, real_dataset, real_store, tmp_path,
                                                               monkeypatch):
    from liverctl.data.sources import find_cases
    from liverctl.data.store import store_bytes
    from liverctl.data.store_writer import check_free_space

    # the estimate is not below what ingest really stores, on real CT
    estimate = check_free_space(tmp_path, find_cases(real_dataset.root).cases)
    assert estimate >= store_bytes(real_store) * 0.9
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=estimate // 2))
    refused = r"to ingest need about [\d.]+ [KMG]B but /\S* has [\d.]+ [KMG]B free; free some space or give --store"
    with pytest.raises(LiverctlError, match=refused):
        check_free_space(tmp_path, find_cases(real_dataset.root).cases)

    store = tmp_path / "s.zarr"
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1000))
    result = run_cli("ingest", str(tiny_dataset), "--store", str(store), "--workers", "1")
    assert result.exit_code == 2
    assert len(error_lines(result)) == 1 and "8 cases to ingest need about" in error_lines(result)[0]
    assert not list((store / "cases").glob("*/image"))  # nothing written
    with pytest.raises(LiverctlError):
        LiverStore.open(store)
    monkeypatch.setattr(shutil, "disk_usage", real_usage)
    assert run_cli("ingest", str(tiny_dataset), "--store", str(store), "--workers", "1").exit_code == 0
    assert len(LiverStore.open(store).case_ids()) == 8


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.float64])
def test_odd_voxel_types_and_a_scaled_file_are_stored_as_the_file_holds_them(tmp_path, dtype):
    """int8, uint16 and float64 volumes, and an int16 file with scl_slope 2 / scl_inter -1024: the store holds
    `dataobj` (scaling applied once) as float16, and `scaling` records the slope and intercept applied."""
    data = tmp_path / "data"
    x, y, z = np.meshgrid(np.arange(40), np.arange(24), np.arange(3), indexing="ij")
    odd = {np.int8: (x + 3 * y + 17 * z) % 250 - 125, np.uint16: x + 100 * y + 5000 * z,
           np.float64: x + 0.25 * y + 100 * z - 1000.5}[dtype].astype(dtype)
    raw = (x + 50 * y + 200 * z - 1000).astype(np.int16)
    label = np.zeros(raw.shape, np.uint8)
    label[2:9, 3:7, 1] = 1
    save_nifti(data / "train/volume/volume-odd.nii.gz", odd)
    scaled = nib.Nifti1Image(raw, np.eye(4))
    scaled.header.set_slope_inter(2.0, -1024.0)
    nib.save(scaled, str(data / "train/volume/volume-scaled.nii"))
    for case in ("odd", "scaled"):
        save_nifti(data / f"train/segmentation/segmentation-{case}.nii.gz", label)
    store = LiverStore.open(ingest_folder(data, tmp_path / "liver.zarr", workers=1).store)
    expected = {"odd": (odd.astype(np.float64), [1.0, 0.0]), "scaled": (raw * 2.0 - 1024.0, [2.0, -1024.0])}
    for case, (hu, scaling) in expected.items():
        meta = store.meta(case)
        stored = np.stack([store.read_slice(case, k) for k in range(3)], axis=-1)
        assert np.array_equal(stored, hu.astype(np.float16)), case
        assert meta["scaling"] == scaling, case
        assert meta["stats"]["min"] == float(hu.astype(np.float16).min()), case
        assert meta["liver_voxels"] == 28 and meta["liver_pixels_per_slice"] == [0, 28, 0], case


def test_a_rerun_that_rebuilds_nothing_says_every_note_again_from_the_store(dataset, tmp_path, monkeypatch):
    """A rerun said only the HU note again: a qform and sform apart, a label on another grid, what nibabel fixed, a
    singular affine, label values taken as liver, a label without any liver value, each said once, when the case
    was built, and a rerun looked clean while the masks might lie flipped against their images. The rerun now says
    the notes the build said, made from what the build recorded in the store: no NIfTI file is read again."""
    vol, seg = dataset / "train" / "volume", dataset / "train" / "segmentation"
    pixdim = nib.load(vol / "volume-0.nii.gz").header["pixdim"].copy()
    pixdim[1] = 0
    with_header_fields(vol / "volume-0.nii.gz", pixdim=pixdim)  # nibabel's fix, and so a qform apart
    grid = nib.load(vol / "volume-1.nii.gz").affine
    placed(vol / "volume-1.nii.gz", grid @ np.diag([-1.0, 1.0, 1.0, 1.0]), grid)  # qform flipped
    save_nifti(seg / "segmentation-2.nii.gz", np.asarray(nib.load(seg / "segmentation-2.nii.gz").dataobj), np.eye(4))
    label = np.asarray(nib.load(seg / "segmentation-3.nii.gz").dataobj)
    save_nifti(seg / "segmentation-3.nii.gz", label * 2, nib.load(vol / "volume-3.nii.gz").affine)  # 0, 2
    hu = np.asarray(nib.load(vol / "volume-4.nii.gz").dataobj)
    save_nifti(vol / "volume-4.nii.gz", np.clip((hu + 1000.0) / 2000.0, 0, 1).astype(np.float32),
               nib.load(vol / "volume-4.nii.gz").affine)  # not HU
    zero_row = [0.0] * 4
    with_header_fields(dataset / "test" / "volume-6.nii.gz", sform_code=1, qform_code=0, srow_x=zero_row,
                       srow_y=zero_row, srow_z=zero_row)  # singular
    store = tmp_path / "s.zarr"
    first = ingest_folder(dataset, store=store, workers=1)
    assert first.ok and len(first.ingested) == 8
    said = sorted((path, text[:24]) for path, text in (line.split(": ", 1) for line in first.notes))
    assert said == sorted([
        (str(vol / "volume-0.nii.gz"), "nibabel fixed the header"),
        (str(vol / "volume-0.nii.gz"), "the header's qform and s"),  # the zero size is the qform's
        (str(vol / "volume-1.nii.gz"), "the header's qform and s"),
        (str(seg / "segmentation-2.nii.gz"), "the label's affine orien"),
        (str(seg / "segmentation-3.nii.gz"), "label values 0, 2; witho"),
        (str(vol / "volume-4.nii.gz"), "values 0..0.868, 0..0.62"),
        (str(dataset / "test" / "volume-6.nii.gz"), "the header's affine is s"),
    ]), first.notes

    def no_nifti_read(*args, **kwargs):
        raise AssertionError("a rerun that rebuilds nothing read a NIfTI file")

    with monkeypatch.context() as patched:
        patched.setattr(nib, "load", no_nifti_read)
        again = ingest_folder(dataset, store=store, workers=1)
    assert again.ingested == [] and len(again.unchanged) == 8
    assert sorted(again.notes) == sorted(first.notes)
    # a label holding structures but none of the liver labels: said again too
    other = tmp_path / "other.zarr"
    given = ingest_folder(dataset, store=other, liver_labels=[1], workers=1)
    (no_liver,) = [line for line in given.notes if "no voxel holds a liver label" in line]
    assert no_liver.startswith(f"{seg / 'segmentation-3.nii.gz'}: no voxel holds a liver label (1) though ")
    with monkeypatch.context() as patched:
        patched.setattr(nib, "load", no_nifti_read)
        given_again = ingest_folder(dataset, store=other, workers=1)
    assert given_again.ingested == [] and sorted(given_again.notes) == sorted(given.notes)


def test_a_store_in_a_read_only_folder_is_refused_saying_what_reads_it_as_it_is(tiny_dataset, tiny_store, tmp_path,
                                                                                  monkeypatch):
    """`ingest /kaggle/input/data --store /kaggle/input/store-ds/liver.zarr` (a store attached read-only) printed
    'error: .../.liver.zarr.ingest (in ...): read-only file system; point the command at a folder ...': a hidden
    folder the user never named. Now the line names the store, where to ingest instead, and what reads it as it is."""
    import errno
    import tempfile

    folder = tmp_path / "store-ds"
    folder.mkdir()
    store = folder / "liver.zarr"
    shutil.copytree(tiny_store, store)
    before = store_content(store)
    real = tempfile.TemporaryFile

    def read_only(*args, **kwargs):  # what a read-only mount answers (chmod does not stop root)
        if Path(kwargs.get("dir", "")) == folder:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(LiverctlError) as refused:
        ingest_folder(tiny_dataset, store=store, workers=1)
    assert str(refused.value) == (
        f"{store}: its folder cannot be written (Read-only file system); ingest into a --store in a folder you can "
        "write to (e.g. --store store/liver.zarr), or use this store as it is: train --store, submit --store and "
        "`liverctl verify --store` only read it")
    with pytest.raises(LiverctlError, match=r"new\.zarr: its folder cannot be written \(Read-only file system\); "
                                            r"ingest into a --store in a folder you can write to \(e\.g\. --store "
                                            r"store/liver\.zarr\)$"):
        ingest_folder(tiny_dataset, store=folder / "new.zarr", workers=1)
    assert sorted(p.name for p in folder.iterdir()) == ["liver.zarr"] and store_content(store) == before


def _one_file_system_each(disk: Path, monkeypatch) -> None:
    """os.rename as the kernel answers it where `disk` is a file system of its own: no rename into or out of it."""
    from liverctl.data import store_writer

    real = os.rename

    def on(path) -> bool:
        return Path(os.path.realpath(Path(path).parent)).is_relative_to(os.path.realpath(disk))

    def rename(src, dst):
        if on(src) != on(dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link", os.fspath(src))
        return real(src, dst)

    monkeypatch.setattr(store_writer.os, "rename", rename)


def test_a_store_linked_in_from_another_disk_is_ingested_there(dataset, tmp_path, monkeypatch):
    """`store/liver.zarr -> /mnt/big/liver.zarr` (a store on a bigger disk): ingest built each case beside the
    link, in store/, and ended in a traceback, `OSError: Invalid cross-device link`, renaming it in. Its work
    folder is now beside the store's real folder, on that disk."""
    disk = tmp_path / "big"
    (disk / "liver.zarr").mkdir(parents=True)
    (tmp_path / "store").mkdir()
    linked = tmp_path / "store" / "liver.zarr"
    linked.symlink_to(disk / "liver.zarr")
    _one_file_system_each(disk, monkeypatch)
    summary = ingest_folder(dataset, store=linked, workers=1)
    assert summary.ingested and not summary.failures
    assert sorted(LiverStore.open(linked).case_ids()) == sorted(LiverStore.open(disk / "liver.zarr").case_ids())
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["liver.zarr"]
    assert [p.name for p in disk.iterdir()] == ["liver.zarr"]  # the work folder removed when it ended


def test_a_store_that_is_a_mount_point_is_one_line_saying_to_ingest_inside_it(dataset, tmp_path, monkeypatch):
    """`--store /out` where /out is a mount point: the same traceback after the first case was built. It is now
    refused before anything is written (os.path.ismount), and a mount that check misses (a bind mount on the same
    disk) ends in one line at its first rename, saying what crossed file systems (it cannot tell the store's mount
    from its cases/')."""
    store = tmp_path / "out"
    store.mkdir()
    _one_file_system_each(store, monkeypatch)
    expected = (f"{store}: is a file system of its own (a mount point): ingest builds each case beside the store "
                f"and renames it in, which cannot cross file systems; give --store a folder inside it, e.g. "
                f"--store {store / 'liver.zarr'}")
    with pytest.raises(LiverctlError) as missed:
        ingest_folder(dataset, store=store, workers=1)
    assert str(missed.value) == _crossed_at_commit(store)
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == store or real_ismount(p))
    shutil.rmtree(store)
    store.mkdir()
    with pytest.raises(LiverctlError) as refused:
        ingest_folder(dataset, store=store, workers=1)
    assert str(refused.value) == expected and list(store.iterdir()) == []


def _crossed_at_commit(store: Path) -> str:
    return (f"{store}: moving a built case from ingest's work folder in {store.parent} into its cases/ crossed file "
            "systems (a bind mount of the store or of its cases/?): ingest builds each case beside the store and "
            "renames it in, which cannot cross them; keep the whole store, and the folder it is in, on one file "
            "system, with no mount of it or inside it")


def test_a_store_whose_cases_folder_is_a_bind_mount_is_one_line_without_the_mount_point_advice(dataset, tmp_path,
                                                                                              monkeypatch):
    """`-v /data/cases:/store/liver.zarr/cases` from the same disk: os.path.ismount misses that bind mount and the
    first case's rename into cases/ fails (EXDEV). The line said the store was a mount point and to ingest into
    --store liver.zarr/liver.zarr, which meets the same; it now says the rename into cases/ crossed file systems,
    and to keep the whole store on one."""
    store = tmp_path / "liver.zarr"
    _one_file_system_each(store / "cases", monkeypatch)
    with pytest.raises(LiverctlError) as crossed:
        ingest_folder(dataset, store=store, workers=1)
    assert str(crossed.value) == _crossed_at_commit(store) and "mount point" not in str(crossed.value)


def test_a_store_that_is_a_link_to_a_mount_point_is_refused_before_anything_is_written(dataset, tmp_path,
                                                                                       monkeypatch):
    """`--store store` where store -> /mnt/big, a disk's own mount point (a Docker volume linked in): os.path.ismount
    answers False for a link, so the up-front refusal missed it; the first case was built beside /mnt/big, on the
    other disk, and its rename in failed (the same line, after the work, the store's files made on the disk). It
    is refused up front now, as the mount point itself is."""
    disk = tmp_path / "big"
    disk.mkdir()
    store = tmp_path / "store"
    store.symlink_to(disk)
    _one_file_system_each(disk, monkeypatch)
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == os.fspath(disk) or real_ismount(p))  # lstat's
    with pytest.raises(LiverctlError) as refused:
        ingest_folder(dataset, store=store, workers=1)
    assert str(refused.value) == (f"{store}: is a file system of its own (a mount point): ingest builds each case "
                                  "beside the store and renames it in, which cannot cross file systems; give --store "
                                  f"a folder inside it, e.g. --store {store / 'liver.zarr'}")
    assert list(disk.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["big", "data", "store"]


def test_an_ingest_on_a_file_system_without_locks_is_one_line(tiny_dataset, tmp_path, monkeypatch):
    """An ingest into a store on NFS without locks (flock: ENOLCK) ended in a traceback, `OSError: [Errno 37]
    No locks available`. Now it is one line naming the store, and nothing is left beside it."""
    import errno
    import fcntl

    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)
    store = tmp_path / "s.zarr"
    with pytest.raises(LiverctlError, match=r"s.zarr: cannot lock it \(No locks available\): its file system takes "
                                            r"no locks .*; give --store a folder on a disk that takes them"):
        ingest_folder(tiny_dataset, store=store, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_one_volume_under_two_case_ids_is_noted(dataset, tmp_path):
    """A data folder that reaches one file by two names (a hard link, a symbolic link: pipelines link files) was
    ingested as two cases without a word, dealt into different folds: a run validating on one trained on the
    other. The ingest now notes each volume stored under more than one case id."""
    store = tmp_path / "s.zarr"
    summary = ingest_folder(dataset, store=store, workers=1)
    assert not [n for n in summary.notes if "more than one case id" in n]
    volumes, labels = dataset / "train" / "volume", dataset / "train" / "segmentation"
    os.link(volumes / "volume-0.nii.gz", volumes / "volume-20.nii.gz")
    os.link(labels / "segmentation-0.nii.gz", labels / "segmentation-20.nii.gz")
    (volumes / "volume-21.nii.gz").symlink_to("volume-1.nii.gz")
    (labels / "segmentation-21.nii.gz").symlink_to("segmentation-1.nii.gz")
    summary = ingest_folder(dataset, store=store, workers=1)
    assert sorted(summary.ingested) == ["20", "21"]
    assert [n for n in summary.notes if "more than one case id" in n] == [
        f"{store}: 2 volumes are stored under more than one case id ('0' and '20'; '1' and '21'): one file under two "
        "names (a link) or a copy; a run that validates on one of them has trained on the other, and its Dice reads "
        "too high: ingest into a new --store from a folder that holds each volume once"]
    test = next((dataset / "test").rglob("*.nii.gz"))  # a test volume linked in as training data: a leak of its own
    os.link(test, volumes / "volume-22.nii.gz")
    os.link(labels / "segmentation-2.nii.gz", labels / "segmentation-22.nii.gz")
    summary = ingest_folder(dataset, store=tmp_path / "t.zarr", workers=1)
    (note,) = [n for n in summary.notes if "more than one case id" in n]
    assert "3 volumes are stored" in note and "a test case is trained on, and its score against its labels reads too " \
        "high" in note and note.count("a run that validates") == 1


@pytest.mark.parametrize("store_name", ["store", "store/liver.zarr"])
def test_a_store_through_a_link_to_nowhere_is_one_line(tiny_dataset, tmp_path, store_name):
    """`--store store` where store -> /mnt/big/liver.zarr and /mnt/big is not mounted ended in a traceback
    (FileExistsError: 'store'), and `--store store/liver.zarr` built the store at the link's target, on the disk
    that holds the empty mount point. Both are one line naming the link now, and nothing is made."""
    (tmp_path / "store").symlink_to(tmp_path / "big" / "liver.zarr")
    with pytest.raises(LiverctlError, match=r"store: is a link to .*big/liver.zarr', which does not exist \(a disk or "
                                            r"volume not mounted\?\); mount it, or choose another --store"):
        ingest_folder(tiny_dataset, store=tmp_path / store_name, workers=1)
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


def test_a_store_whose_cases_folder_is_on_another_disk_is_one_line_saying_so(dataset, tmp_path, monkeypatch):
    """A store whose cases/ was moved to a bigger disk and linked back (or mounted there: Docker's `-v
    /big/cases:/store/liver.zarr/cases`) met `Invalid cross-device link` at its first case, said as 'is a file
    system of its own (a mount point): ... give --store a folder inside it, e.g. --store store/liver.zarr/liver.zarr',
    advice that makes a store inside the store. The line now says which folder is elsewhere; a mounted one is
    refused before any case is built."""
    store = tmp_path / "liver.zarr"
    ingest_folder(dataset, store=store, workers=1)
    disk = tmp_path / "big"
    disk.mkdir()
    shutil.move(store / "cases", disk / "cases")
    (store / "cases").symlink_to(disk / "cases")
    _one_file_system_each(disk, monkeypatch)
    (dataset / "train" / "volume" / "volume-0.nii.gz").unlink()  # ingested again (as a new case): a rename
    shutil.copy(dataset / "train" / "volume" / "volume-1.nii.gz", dataset / "train" / "volume" / "volume-0.nii.gz")
    expected = (f"{store}: its folder cases/ is on another file system (a link or a mount to another disk): ingest "
                "builds each case and the index beside the store and renames them in, which cannot cross file "
                "systems; keep the whole store on one disk (a link to the store's own folder works)")
    with pytest.raises(LiverctlError) as linked:
        ingest_folder(dataset, store=store, workers=1)
    assert str(linked.value) == expected
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == store / "cases" or real_ismount(p))
    built = []
    monkeypatch.setattr("liverctl.data.store_writer._commit_case", lambda *args: built.append(args))
    with pytest.raises(LiverctlError) as mounted:
        ingest_folder(dataset, store=store, workers=1)
    assert str(mounted.value) == expected and built == []

