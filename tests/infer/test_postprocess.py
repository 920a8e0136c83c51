import errno
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from liverctl.errors import LiverctlError
from liverctl.infer.postprocess import (
    AutoSelector,
    FilesNotCleaned,
    choose_postprocess,
    parse_postprocess,
    postprocess_nifti,
)

# The real CT samples sit beside the repository (../shared/data/real), as in tests/conftest.py.
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
if not REAL.is_dir():
    REAL = Path("/work/shared/data/real")


def _two_blobs():
    """A 6x6x6 cube (216 voxels) and a separate 2x2x2 cube (8 voxels), plus one stray voxel."""
    vol = np.zeros((20, 20, 12), dtype=bool)
    vol[2:8, 2:8, 2:8] = True
    vol[12:14, 12:14, 9:11] = True
    vol[18, 1, 0] = True
    return vol


def test_largest_keeps_only_the_big_cube():
    vol = _two_blobs()
    out = parse_postprocess("largest")(vol)
    expected = np.zeros_like(vol)
    expected[2:8, 2:8, 2:8] = True
    assert np.array_equal(out, expected)


def test_diagonal_neighbours_are_connected_in_3d():
    vol = np.zeros((5, 5, 5), dtype=bool)
    vol[1, 1, 1] = vol[2, 2, 2] = vol[3, 3, 3] = True  # corner-touching: one 26-connected component
    vol[0, 4, 0] = True
    out = parse_postprocess("largest")(vol)
    assert out.sum() == 3 and not out[0, 4, 0]


def test_min_size_drops_only_small_components():
    vol = _two_blobs()
    out = parse_postprocess("min-size:8")(vol)
    assert out.sum() == 216 + 8
    assert not out[18, 1, 0]
    assert parse_postprocess("min-size:9")(vol).sum() == 216


@pytest.mark.parametrize("order", ["C", "F"], ids=["C-ordered", "a NIfTI's Fortran order"])
@pytest.mark.parametrize("spec", ["largest", "min-size:10"])
def test_cleaning_a_mask_of_many_components_takes_no_int64_copy_of_its_labels(monkeypatch, spec, order):
    """np.bincount(labels.ravel()) counted the components' sizes from a C-ordered copy of the labels (cc3d keeps a
    NIfTI's Fortran order) and an int64 copy of that: `postprocess --mode min-size:100` of one 512 x 512 x 900
    mask peaked at 2.85 GB. What is left: the mask as uint8 and cc3d's labels (uint16 here), and the result."""
    from memory_peak import traced_peak

    import liverctl.infer.postprocess

    monkeypatch.setattr(liverctl.infer.postprocess, "_SIZES_CHUNK", 1 << 14, raising=False)  # a 36th of the volume
    mask = np.zeros((96, 96, 64), bool)
    mask[10:60, 10:60, 5:50] = True
    mask[::8, ::8, ::8] = True  # specks: hundreds of components
    mask = np.asarray(mask, order=order)
    post = parse_postprocess(spec)
    post(mask[:8, :8, :8])  # cc3d imported
    cleaned, peak = traced_peak(lambda: post(mask))
    assert cleaned[20, 20, 20] and not cleaned[0, 0, 0]
    assert peak < 5 * mask.size  # bytes: before, 13 per voxel and more


def test_empty_mask_stays_empty():
    empty = np.zeros((4, 4, 4), dtype=bool)
    for spec in ("largest", "min-size:3", "fill", "fill2d", "largest+fill2d"):
        assert not parse_postprocess(spec)(empty).any()


def test_fill_3d_vs_per_slice():
    vol = np.zeros((9, 9, 9), dtype=bool)
    vol[1:8, 1:8, 1:8] = True
    vol[3:6, 3:6, 3:6] = False  # an enclosed cavity: a hole in 3D and in slices 3..5
    assert parse_postprocess("fill")(vol).sum() == 7**3
    assert parse_postprocess("fill2d")(vol).sum() == 7**3
    tube = np.zeros((9, 9, 9), dtype=bool)
    tube[1:8, 1:8, :] = True
    tube[4, 4, :] = False  # a channel open at both ends: no 3D hole, but a hole in every slice
    assert parse_postprocess("fill")(tube).sum() == tube.sum()
    assert parse_postprocess("fill2d")(tube).sum() == tube.sum() + 9


def test_chained_steps_apply_in_order():
    vol = _two_blobs()
    vol[4, 4, 4] = False
    out = parse_postprocess("largest+fill")(vol)
    assert out.sum() == 216


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("largets", "did you mean 'largest'"), ("min-size", "positive voxel count"), ("min-size:x", "positive"),
     ("largest:3", "takes no argument"), ("auto", "must be resolved"),
     ("largest++fill", "has an empty step; join steps with one '+'"), ("", "has an empty step"),
     # no voxel count: more than an array holds (one of 10^23 voxels emptied every mask), a digit int() refuses,
     # more digits than int() reads (both a ValueError traceback)
     ("min-size:99999999999999999999999", "positive voxel count below 2^63"),
     (f"min-size:{2**63}", "below 2^63"), ("min-size:\u00b2", "below 2^63"), ("min-size:" + "9" * 5000, "below 2^63")],
)
def test_bad_specs_fail_clearly(spec, fragment):
    with pytest.raises(LiverctlError) as info:
        parse_postprocess(spec)
    assert fragment in str(info.value)


def test_auto_picks_largest_when_it_helps_and_none_otherwise():
    label = np.zeros((20, 20, 12), dtype=bool)
    label[2:8, 2:8, 2:8] = True
    noisy = _two_blobs()
    choice = choose_postprocess([("a", noisy, label)])
    assert choice.scores["largest"] == pytest.approx(1.0)
    assert choice.scores["none"] < 1.0
    assert choice.spec == "largest"
    assert "largest" in choice.describe()

    # two real components in the label: keeping the largest would hurt, so auto keeps none
    label2 = _two_blobs()
    assert choose_postprocess([("b", label2.copy(), label2)]).spec == "none"


def test_auto_with_no_cases_fails():
    with pytest.raises(LiverctlError, match="needs validation cases"):
        AutoSelector().choose()


def test_postprocess_real_volume_keeps_header_and_affine(tmp_path):
    src = REAL / "totalseg-example" / "liver.nii.gz"
    if not src.exists():
        pytest.skip("real data not available")
    # add a stray blob far from the liver so `largest` has something to remove
    original = nib.load(str(src))
    data = np.asanyarray(original.dataobj).copy()
    data[0:3, 0:3, 0:3] = 1
    noisy = tmp_path / "noisy.nii.gz"
    nib.save(nib.Nifti1Image(data, original.affine, header=original.header.copy()), str(noisy))

    out = tmp_path / "clean" / "mask.nii.gz"
    (result,) = postprocess_nifti(noisy, out, "largest")
    cleaned = nib.load(str(out))
    assert np.array_equal(cleaned.affine, original.affine)
    assert cleaned.header.binaryblock == nib.load(str(noisy)).header.binaryblock
    assert cleaned.get_data_dtype() == original.get_data_dtype()
    got = np.asanyarray(cleaned.dataobj)
    assert result.voxels_before == int(data.sum()) and result.voxels_after == int(got.sum())
    assert not got[0:3, 0:3, 0:3].any()
    assert set(np.unique(got)) == {0, 1}
    assert got.sum() >= data.sum() - 27 - 10  # the liver itself stays (bar a few loose voxels)


def test_liver_labels_select_values(tmp_path):
    src = REAL / "dcmqi-3slice" / "label.nii.gz"
    if not src.exists():
        pytest.skip("real data not available")
    data = np.asanyarray(nib.load(str(src)).dataobj)
    out = tmp_path / "liver.nii.gz"
    postprocess_nifti(src, out, "none", liver_labels=[1])
    got = np.asanyarray(nib.load(str(out)).dataobj)
    assert np.array_equal(got.astype(bool), data == 1)


def test_liver_labels_none_of_which_the_mask_holds_are_said(tmp_path):
    """`postprocess MASK OUT --liver-labels 2` on a 0/1 mask wrote an empty mask, '0 -> 0 voxels', without a word;
    evaluate says the same of such a label (`liver_mask.no_liver_note`), and so does postprocess now."""
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(_two_blobs().astype(np.uint8), np.eye(4)), str(mask))
    note = f"{mask}: holds label value 1, none of the liver labels 2: written as an empty mask"
    (result,) = postprocess_nifti(mask, tmp_path / "out.nii.gz", "largest", liver_labels=[2])
    assert (result.voxels_before, result.voxels_after, result.note) == (0, 0, note)
    assert postprocess_nifti(mask, tmp_path / "out.nii.gz", "largest", liver_labels=[1])[0].note is None
    assert postprocess_nifti(mask, tmp_path / "out.nii.gz", "largest")[0].note is None
    empty = tmp_path / "empty.nii.gz"  # nothing labelled at all: an empty mask is what it is, nothing to say
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(empty))
    assert postprocess_nifti(empty, tmp_path / "out.nii.gz", "largest", liver_labels=[2])[0].note is None
    cli = _cli(mask, tmp_path / "cli.nii.gz", "--liver-labels", "2")
    assert cli.exit_code == 0, cli.output
    assert f"note: {note}" in " ".join(cli.stderr.split())


def test_a_4d_mask_of_one_volume_keeps_its_shape_and_header(tmp_path):
    """dcmqi's label saved as (X, Y, Z, 1), as some converters write masks: the cleaned file was (X, Y, Z), its
    header's dim rewritten, though postprocess keeps each file's header."""
    src = REAL / "dcmqi-3slice" / "label.nii.gz"
    if not src.exists():
        pytest.skip("real data not available")
    original = nib.load(str(src))
    data = np.asanyarray(original.dataobj)
    four = tmp_path / "label4d.nii.gz"
    nib.save(nib.Nifti1Image(data[..., None], original.affine, header=original.header.copy()), str(four))
    out = tmp_path / "clean.nii.gz"
    postprocess_nifti(four, out, "none", liver_labels=[1])
    cleaned = nib.load(str(out))
    assert cleaned.shape == data.shape + (1,)
    assert cleaned.header.binaryblock == nib.load(str(four)).header.binaryblock
    assert np.array_equal(np.asanyarray(cleaned.dataobj)[..., 0].astype(bool), data == 1)


def test_folder_mode_and_bad_paths(tmp_path):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    vol = _two_blobs().astype(np.uint8)
    for name in ("a.nii.gz", "b.nii"):
        nib.save(nib.Nifti1Image(vol, np.diag([2.0, 2.0, 3.0, 1.0])), str(src_dir / name))
    (src_dir / "notes.txt").write_text("ignored")
    results = postprocess_nifti(src_dir, tmp_path / "out", "largest")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.nii"]
    assert [r.voxels_after for r in results] == [216, 216]
    with pytest.raises(LiverctlError, match="no such file"):
        postprocess_nifti(tmp_path / "missing", tmp_path / "x", "largest")
    with pytest.raises(LiverctlError, match="is the input folder"):
        postprocess_nifti(src_dir, src_dir, "largest")
    with pytest.raises(LiverctlError, match="must end in .nii"):
        postprocess_nifti(src_dir / "a.nii.gz", tmp_path / "out.txt", "largest")
    # a folder into a file name made a folder named mask.nii.gz
    with pytest.raises(LiverctlError, match="the output must be a folder too"):
        postprocess_nifti(src_dir, tmp_path / "mask.nii.gz", "largest")
    assert not (tmp_path / "mask.nii.gz").exists()
    # a link loop was "no such file or folder"
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    with pytest.raises(LiverctlError, match="a link that leads to no file"):
        postprocess_nifti(tmp_path / "loop1", tmp_path / "x.nii.gz", "largest")


def test_one_bad_file_of_two_is_counted_in_words_that_agree(tmp_path):
    """It said "1 of 2 file(s) could not be read and were not cleaned (above); the other 1 were"."""
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    nib.save(nib.Nifti1Image(_two_blobs().astype(np.uint8), np.eye(4)), str(src_dir / "a.nii.gz"))
    (src_dir / "b.nii.gz").write_bytes(b"not a NIfTI")
    result = _cli(src_dir, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = _error_lines(result)
    assert line == f"error: {src_dir}: 1 of 2 files was not cleaned (above); the other 1 was"


def test_a_folder_is_listed_by_ingests_rule(tmp_path):
    """A macOS `._a.nii.gz` failed the folder ('cannot be read as NIfTI'), `B.NII` was left out without a word
    (its cleaned copy missing from the output), and a folder named like NIfTI was taken for a mask."""
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    vol = _two_blobs().astype(np.uint8)
    for name in ("a.nii.gz", "B.NII"):
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(src_dir / name.lower()))
        (src_dir / name.lower()).rename(src_dir / name)
    (src_dir / "._a.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (src_dir / "c.nii.gz").mkdir()
    results = postprocess_nifti(src_dir, tmp_path / "out", "largest")
    assert [(r.source.name, r.voxels_after) for r in results] == [("B.NII", 216), ("a.nii.gz", 216)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["B.NII", "a.nii.gz"]
    (src_dir / "d.nii.gz").symlink_to("annexed")  # a link to nowhere is named, not skipped
    with pytest.raises(FilesNotCleaned) as info:
        postprocess_nifti(src_dir, tmp_path / "out2", "largest")
    (failure,) = info.value.failures
    assert failure.startswith(f"{src_dir / 'd.nii.gz'}: a link that leads to no file")


@pytest.mark.parametrize("fields", [{"srow_x": [float("nan"), 0, 0, 0]},
                                    {"sform_code": 0, "qform_code": 1, "quatern_b": float("nan")}])
def test_an_affine_holding_nan_is_one_line_not_nibabels_traceback(tmp_path, fields):
    """nibabel reads such a header but cannot save the cleaned mask with it: 'HeaderDataError: Could not
    decompose affine' came out as a traceback, in folder mode too, stopping every file after it."""
    from nifti_fixtures import with_header_fields

    src_dir = tmp_path / "in"
    src_dir.mkdir()
    for name in ("a.nii", "b.nii"):
        nib.save(nib.Nifti1Image(_two_blobs().astype(np.uint8), np.eye(4)), str(src_dir / name))
    with_header_fields(src_dir / "a.nii", **fields)
    result = _cli(src_dir / "a.nii", tmp_path / "a.nii")
    assert result.exit_code == 2 and _error_lines(result) == [
        f"error: {src_dir / 'a.nii'}: header's affine ({'sform' if 'srow_x' in fields else 'qform'}) holds NaN "
        "or infinity; the header is damaged: save the volume again with a valid affine"]
    assert not (tmp_path / "a.nii").exists()
    with pytest.raises(FilesNotCleaned) as info:
        postprocess_nifti(src_dir, tmp_path / "out", "largest")
    assert [r.source.name for r in info.value.results] == ["b.nii"] and len(info.value.failures) == 1


def test_a_bad_file_in_a_folder_is_named_and_every_other_file_is_cleaned(tmp_path):
    """The first unreadable file (here b.nii.gz, 2D) stopped the folder: a.nii.gz cleaned, c and d not, and
    only b named, so the output folder held a part of the masks with nothing saying which; now every readable
    file is cleaned, each unreadable one gets its own line, and the exit status is 2."""
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    vol = _two_blobs().astype(np.uint8)
    for name in ("a.nii.gz", "c.nii.gz", "d.nii"):
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(src_dir / name))
    nib.save(nib.Nifti1Image(vol[..., 0], np.eye(4)), str(src_dir / "b.nii.gz"))
    (src_dir / "e.nii.gz").write_bytes(b"not a NIfTI")
    out = tmp_path / "out"
    result = _cli(src_dir, out)
    assert result.exit_code == 2, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "c.nii.gz", "d.nii"]
    assert all(int(np.asanyarray(nib.load(str(p)).dataobj).sum()) == 216 for p in out.iterdir())
    assert f"{src_dir / 'b.nii.gz'}: is 2D" in result.stderr and f"{src_dir / 'e.nii.gz'}: cannot be read" in result.stderr
    (line,) = _error_lines(result)
    assert line == f"error: {src_dir}: 2 of 5 files were not cleaned (above); the other 3 were"
    assert "c.nii.gz -> " in result.stdout
    with pytest.raises(FilesNotCleaned) as info:  # the library says the same
        postprocess_nifti(src_dir, tmp_path / "out2", "largest")
    assert [r.source.name for r in info.value.results] == ["a.nii.gz", "c.nii.gz", "d.nii"]
    single = _cli(src_dir / "b.nii.gz", tmp_path / "b.nii.gz")  # one file: its own error, as before
    assert single.exit_code == 2 and _error_lines(single) == [f"error: {src_dir / 'b.nii.gz'}: is 2D with shape "
                                                              "(20, 20); expected a 3D volume (x, y, slices)"]


def test_a_folder_killed_midway_leaves_the_output_folder_as_it_was(tmp_path, monkeypatch):
    """A postprocess of a folder killed after its first file (simulated: the second write ends the process as
    SIGINT does) left an output folder holding one cleaned mask of three, which read as the whole output; in
    place, one of three masks overwritten. Now the cleaned masks appear together at the end (files.staged_folder):
    the output folder is as it was, and the same command again cleans every file."""
    import liverctl.infer.postprocess as postprocess

    src_dir = tmp_path / "in"
    src_dir.mkdir()
    vol = _two_blobs().astype(np.uint8)
    for name in ("a.nii.gz", "b.nii.gz", "c.nii"):
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(src_dir / name))
    real, written = postprocess._write_cleaned, []

    def write_then_die(*args):
        if written:
            raise KeyboardInterrupt
        written.append(real(*args))
        return written[-1]

    monkeypatch.setattr(postprocess, "_write_cleaned", write_then_die)
    for out, in_place in ((tmp_path / "out", False), (src_dir, True)):
        written.clear()
        with pytest.raises(KeyboardInterrupt):
            postprocess_nifti(src_dir, out, "largest", in_place=in_place)
        assert len(written) == 1
        assert not (tmp_path / "out").exists()
        assert all(int(np.asanyarray(nib.load(str(p)).dataobj).sum()) == 225 for p in src_dir.iterdir())
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    monkeypatch.undo()
    postprocess_nifti(src_dir, tmp_path / "out", "largest")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.nii.gz", "c.nii"]


def test_fill_matches_scipy_binary_fill_holes():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    filled_any = False
    for density in (0.3, 0.6, 0.85):
        vol = rng.random((15, 13, 9)) < density
        filled_any |= bool((ndimage.binary_fill_holes(vol) != vol).any())
        assert np.array_equal(parse_postprocess("fill")(vol), ndimage.binary_fill_holes(vol))
        per_slice = np.stack([ndimage.binary_fill_holes(vol[..., z]) for z in range(vol.shape[2])], axis=-1)
        assert np.array_equal(parse_postprocess("fill2d")(vol), per_slice)
    assert filled_any  # the random volumes do have holes to fill


# ---------------------------------------------------------------------------------------- untrusted files


def _cli(*args: str):
    from typer.testing import CliRunner

    from liverctl.cli import app

    return CliRunner().invoke(app, ["postprocess", *map(str, args)])


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def noisy_mask(tmp_path) -> Path:
    path = tmp_path / "in" / "mask.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(_two_blobs().astype(np.uint8), np.eye(4)), str(path))
    return path


def test_output_that_is_the_input_is_refused_unless_in_place(noisy_mask):
    before = noisy_mask.read_bytes()
    for target in (noisy_mask, noisy_mask.parent, noisy_mask.parent / ".." / "in" / noisy_mask.name):
        result = _cli(noisy_mask, target)
        assert result.exit_code == 2, result.stdout
        (line,) = _error_lines(result)
        assert "output is the input file" in line and "--in-place" in line
    folder = _cli(noisy_mask.parent, noisy_mask.parent)
    assert folder.exit_code == 2 and "output folder is the input folder" in _error_lines(folder)[0]
    assert noisy_mask.read_bytes() == before  # untouched

    result = _cli(noisy_mask, noisy_mask, "--in-place")
    assert result.exit_code == 0, result.stderr
    assert int(np.asanyarray(nib.load(str(noisy_mask)).dataobj).sum()) == 216  # only the big cube is left
    assert _cli(noisy_mask.parent, noisy_mask.parent, "--in-place").exit_code == 0
    assert sorted(p.name for p in noisy_mask.parent.iterdir()) == ["mask.nii.gz"]  # no temporary file left


@pytest.mark.parametrize("many", [False, True])
def test_a_target_in_a_read_only_place_is_refused_up_front_saying_where_to_go(noisy_mask, tmp_path, monkeypatch,
                                                                              many):
    """`liverctl postprocess SRC /kaggle/input/...` (a read-only mount) said only 'cannot write here (Read-only
    file system)', after reading the masks, where submit, ingest and --resume say what to do next; it is now
    refused before any file is read, as submit's --out and --save-masks are (`files.check_output_file`)."""
    import tempfile

    read_only, real = tmp_path / "input", tempfile.TemporaryFile
    read_only.mkdir()

    def read_only_there(*args, dir=None, **kwargs):  # the mount answers EROFS, to root too
        if Path(dir) == read_only:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only_there)
    if many:
        nib.save(nib.load(str(noisy_mask)), str(noisy_mask.parent / "other.nii.gz"))
    source, target = (noisy_mask.parent, read_only / "clean") if many else (noisy_mask, read_only / "out.nii.gz")
    result = _cli(source, target)
    assert result.exit_code == 2, result.output
    what, where = ("the cleaned masks", "a folder") if many else ("the cleaned mask", "a file in a folder")
    assert _error_lines(result) == [f"error: {target}: cannot write {what} in {read_only}: Read-only file system; "
                                    f"give TARGET {where} you can write to"]
    assert list(read_only.iterdir()) == []


def test_unwritable_target_is_one_line(noisy_mask, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _cli(noisy_mask, blocker / "out.nii.gz")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    (line,) = _error_lines(result)
    assert line == f"error: {blocker / 'out.nii.gz'}: cannot write the cleaned mask there: {blocker} is not a folder"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = _cli(noisy_mask, locked / "out.nii.gz")
        assert result.exit_code == 2 and (f"cannot write the cleaned mask in {locked}: Permission denied; give TARGET"
                                          in _error_lines(result)[0])


def test_disk_full_while_writing_is_one_line_and_leaves_no_temporary_file(noisy_mask, tmp_path, monkeypatch):
    def full(img, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(nib, "save", full)
    out = tmp_path / "out"
    result = _cli(noisy_mask, out / "clean.nii.gz")
    assert result.exit_code == 2
    (line,) = _error_lines(result)
    # the one full-disk line of liverctl.files: "PATH: no space left on DEVICE while writing WHAT"
    assert line.startswith(f"error: {out / 'clean.nii.gz'}: no space left on /") and line.endswith("while writing the mask")
    assert list(out.iterdir()) == []


def test_absurd_header_is_refused_before_reading(tmp_path):
    from nifti_fixtures import header_only

    path = header_only(tmp_path / "absurd.nii.gz", [2048, 2048, 256])
    with pytest.raises(LiverctlError, match="header claims 2048 x 2048 x 256 int16 voxels"):
        postprocess_nifti(path, tmp_path / "out.nii.gz", "largest")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(os.urandom(200))
    result = _cli(garbage, tmp_path / "out.nii.gz")
    assert result.exit_code == 2 and f"{garbage}: cannot be read as NIfTI" in _error_lines(result)[0]
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize("value, words", [
    ("-1", "error: --liver-labels -1: no label map holds -1;"),
    ("99999999999999999999", "error: --liver-labels 99999999999999999999: no label map holds 99999999999999999999;"),
    ("256", "label.nii.gz: holds uint8 label values (0 to 255): none of the liver labels 256 can be among them"),
    ("0", "error: --liver-labels 0: 0 is the background of a label map"),
    ("1,0", "error: --liver-labels 1,0: 0 is the background of a label map"),
])
def test_liver_labels_no_label_map_holds_are_refused(tmp_path, value, words):
    """`postprocess --liver-labels -1` (256 on a uint8 label, 10^20) wrote an empty mask, '0 -> 0 voxels', exit 0;
    `--liver-labels 0` wrote the background as the mask: 'label.nii.gz -> ...: 666895 -> 666895 voxels' of dcmqi's
    786432, exit 0."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    src = REAL / "dcmqi-3slice" / "label.nii.gz"  # uint8
    if not src.exists():
        pytest.skip("real data not available")
    out = tmp_path / "liver.nii.gz"
    result = CliRunner().invoke(app, ["postprocess", str(src), str(out), f"--liver-labels={value}"])
    assert result.exit_code == 2 and words in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_min_size_larger_than_the_volume_is_refused(tmp_path):
    """`postprocess -m min-size:N` with N above the file's voxel count emptied the mask: on dcmqi's real label
    (512 x 512 x 3 = 786,432 voxels) `min-size:1000000` printed '107098 -> 0 voxels', exit 0. Now one line naming
    the file; a folder cleans its other files, each refused one named; N up to the volume's size is taken."""
    src = REAL / "dcmqi-3slice" / "label.nii.gz"
    if not src.exists():
        pytest.skip("real data not available")
    out = tmp_path / "liver.nii.gz"
    result = _cli(src, out, "--liver-labels", "1", "--mode", "largest+min-size:786433")
    assert result.exit_code == 2 and _error_lines(result) == [
        f"error: {src}: post-processing 'largest+min-size:786433' drops components of fewer than 786,433 voxels, "
        "more than the whole volume of the file holds (786,432): its mask would be empty whatever it holds; give a "
        "smaller min-size"], result.output
    assert not out.exists()
    assert postprocess_nifti(src, out, "min-size:786432", liver_labels=[1])[0].voxels_after == 0  # as asked
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "dcmqi.nii.gz").symlink_to(src)
    nib.save(nib.Nifti1Image(np.ones((100, 100, 100), np.uint8), np.eye(4)), str(folder / "big.nii.gz"))
    with pytest.raises(FilesNotCleaned) as info:
        postprocess_nifti(folder, tmp_path / "out", "min-size:800000", liver_labels=[1])
    assert [r.source.name for r in info.value.results] == ["big.nii.gz"] and info.value.results[0].voxels_after == 10**6
    (failure,) = info.value.failures
    assert failure.startswith(f"{folder / 'dcmqi.nii.gz'}: post-processing 'min-size:800000' drops components")


def test_a_real_label_as_an_analyze_or_nifti_pair_is_cleaned_as_its_nii_gz(tmp_path):
    """postprocess listed and took only .nii / .nii.gz ('not a NIfTI file (.nii or .nii.gz)', a folder of pairs
    'no .nii / .nii.gz files'). A pair (NAME.hdr + NAME.img, named by either) is cleaned as its .nii.gz is, into
    a pair of the same kind: its header, type and affine kept, no temporary file left."""
    src = REAL / "dcmqi-3slice" / "label.nii.gz"
    if not src.exists():
        pytest.skip("real data not available")
    img = nib.load(str(src))
    data = np.asanyarray(img.dataobj).copy()
    data[0:3, 0:3, 0:2] = 1  # a stray blob for `largest` to remove
    noisy = tmp_path / "noisy.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(noisy))
    (expected,) = postprocess_nifti(noisy, tmp_path / "clean.nii.gz", "largest+fill", liver_labels=[1])
    cleaned = np.asanyarray(nib.load(str(tmp_path / "clean.nii.gz")).dataobj)
    assert expected.voxels_after < expected.voxels_before

    pairs = tmp_path / "pairs"
    pairs.mkdir()
    nib.save(nib.Nifti1Pair(data, img.affine, img.header), str(pairs / "nifti.hdr"))
    nib.save(nib.AnalyzeImage(data, img.affine), str(pairs / "ANALYZE.HDR"))
    for source, target in [(pairs / "nifti.hdr", tmp_path / "one.hdr"), (pairs / "nifti.img", tmp_path / "two.img")]:
        (result,) = postprocess_nifti(source, target, "largest+fill", liver_labels=[1])
        out = nib.load(str(target))
        assert type(out) is nib.Nifti1Pair and np.array_equal(np.asanyarray(out.dataobj), cleaned)
        assert np.array_equal(out.affine, img.affine) and out.get_data_dtype() == img.get_data_dtype()
        assert (result.voxels_before, result.voxels_after) == (expected.voxels_before, expected.voxels_after)
    with pytest.raises(LiverctlError, match="nifti.hdr: output is the input file"):  # the pair, named by its .img
        postprocess_nifti(pairs / "nifti.img", pairs / "nifti.hdr", "largest")
    results = postprocess_nifti(pairs, tmp_path / "out", "largest+fill", liver_labels=[1])
    assert [r.source.name for r in results] == ["ANALYZE.HDR", "nifti.hdr"]
    # nothing temporary left; SPM's Analyze (as nibabel reads a plain one) keeps its affine in a .mat too
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ANALYZE.HDR", "ANALYZE.IMG", "ANALYZE.MAT",
                                                                   "nifti.hdr", "nifti.img"]
    analyze = nib.load(str(tmp_path / "out" / "ANALYZE.HDR"))
    assert isinstance(analyze, nib.AnalyzeImage) and np.array_equal(np.asanyarray(analyze.dataobj), cleaned)
    assert np.array_equal(analyze.affine, nib.load(str(pairs / "ANALYZE.HDR")).affine)

    # a half missing: one line naming the half that is there; the folder's other files are still cleaned
    (pairs / "nifti.img").unlink()
    with pytest.raises(FilesNotCleaned) as info:
        postprocess_nifti(pairs, tmp_path / "out2", "largest", liver_labels=[1])
    assert info.value.failures == [f"{pairs / 'nifti.hdr'}: an Analyze header without its voxel file: "
                                   "nifti.img is missing"]
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["ANALYZE.HDR", "ANALYZE.IMG", "ANALYZE.MAT"]
    (pairs / "ANALYZE.HDR").unlink()
    result = _cli(pairs / "ANALYZE.IMG", tmp_path / "x.hdr", "--liver-labels", "1")
    assert result.exit_code == 2 and _error_lines(result) == [
        f"error: {pairs / 'ANALYZE.IMG'}: an Analyze voxel file without its header: ANALYZE.HDR is missing"]
    assert not (tmp_path / "x.hdr").exists() and not (tmp_path / "x.img").exists()
