"""Opening NIfTI from strangers: every header check refuses before any voxel is read, and real files pass."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from memory_peak import traced_peak
from nifti_fixtures import header_only, with_header_fields

from liverctl.data import nifti
from liverctl.data.nifti import (
    machine_memory,
    memory_budget,
    open_nifti,
    read_nifti,
    volume_geometry,
    volume_shape,
)
from liverctl.errors import LiverctlError

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
if not REAL.is_dir():
    REAL = Path("/work/shared/data/real")


def save(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def refused(path: Path, match: str, **kwargs) -> str:
    with pytest.raises(LiverctlError, match=match) as info:
        read_nifti(path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_absurd_gzip_header_is_refused_before_any_allocation(tmp_path):
    path = header_only(tmp_path / "absurd.nii.gz", [2048, 2048, 256])
    assert path.stat().st_size < 100
    message, peak = traced_peak(lambda: refused(path, "more than a .* gzip file can hold"))
    assert "2048 x 2048 x 256 int16" in message
    assert peak < 4 << 20  # main allocated the 2 GB the header claims before it found the data missing


def test_header_beyond_any_memory_is_refused_by_the_file_size_not_by_malloc(tmp_path):
    refused(header_only(tmp_path / "cube.nii.gz", [30000, 30000, 30000]), "30000 x 30000 x 30000 .* gzip file")


def test_uncompressed_file_must_hold_the_bytes_its_header_claims(tmp_path):
    message = refused(header_only(tmp_path / "short.nii", [64, 64, 24]), "the file holds 352 B")
    assert "truncated" in message and "vox_offset" not in message
    # 'header claims 4 x 4 x 2 int16 voxels (64 B) but the file holds 416 B' did not say why 64 B is too much
    far = with_header_fields(save(tmp_path / "far.nii", np.zeros((4, 4, 2), np.int16)), vox_offset=1e6)
    refused(far, r"header claims 4 x 4 x 2 int16 voxels \(64 B\) at 976.6 KB into the file \(its vox_offset\) "
                 "but the file holds 416 B")


@pytest.mark.parametrize(
    ("dims", "match"),
    [
        ([64, -64, 24], r"header claims shape \(64 x -64 x 24\); every dimension must be positive"),
        ([64, 64, 0], "every dimension must be positive"),
        ([64, 64, 24, 3], r"is 4D with shape \(64, 64, 24, 3\)"),
        ([64, 64], r"is 2D with shape \(64, 64\)"),
    ],
)
def test_shapes_that_are_not_a_volume(tmp_path, dims, match):
    refused(header_only(tmp_path / "bad.nii.gz", dims), match)


def test_trailing_axes_of_one_are_a_3d_volume(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    for extra in ([1], [1, 1]):
        path = save(tmp_path / f"v{len(extra)}.nii.gz", data.reshape(4, 5, 6, *extra))
        img, got = read_nifti(path)
        assert volume_shape(img) == (4, 5, 6)
        np.testing.assert_array_equal(got, data)


def test_voxel_types_that_are_not_numbers(tmp_path):
    path = save(tmp_path / "c.nii", np.zeros((4, 4, 4), dtype=np.complex64))
    refused(path, "voxels of type complex64, expected integers or floats")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("garbage.nii.gz", os.urandom(300), "cannot be read as NIfTI"),
        ("garbage.nii", b"not an image at all\n" * 40, "cannot be read as NIfTI"),
        ("empty.nii.gz", b"", "cannot be read as NIfTI"),
    ],
)
def test_files_that_are_not_nifti(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    refused(path, match)


def test_a_file_compressed_otherwise_than_its_name_says_is_told_what_to_rename_it_to(tmp_path):
    """nibabel goes by the name: a gzip named .nii was "Cannot work out file type", a plain NIfTI named .nii.gz
    "is not a gzip file"; garbage gets no advice."""
    volume = np.zeros((4, 4, 2), np.int16)
    gzipped = save(tmp_path / "g.nii.gz", volume).rename(tmp_path / "g.nii")
    plain = save(tmp_path / "p.nii", volume).rename(tmp_path / "p.nii.gz")
    refused(gzipped, "it is gzip-compressed: rename it to end in .nii.gz")
    refused(plain, "it is an uncompressed NIfTI: rename it to end in .nii")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(os.urandom(300))
    with pytest.raises(LiverctlError) as exc:
        open_nifti(garbage)
    assert "rename" not in str(exc.value)


def test_what_the_first_bytes_say_is_added_to_nibabels_complaint(tmp_path):
    """A header whose dim[0] is out of range was 'vox offset 0 too low for single file nifti1' (nibabel takes it
    for the other byte order); a Git LFS or git-annex pointer checked out in place of the image got no advice."""
    for name in ("d.nii", "d.nii.gz"):
        damaged = with_header_fields(save(tmp_path / name, np.zeros((4, 4, 2), np.int16)), dim=[9, 4, 4, 2, 1, 1, 1, 1])
        refused(damaged, r"dim\[0\] \(the number of axes\) is 9, where NIfTI allows 1 to 7: the header is damaged$")
    lfs = tmp_path / "lfs.nii.gz"
    lfs.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 12345\n")
    refused(lfs, r"it is a Git LFS pointer, not the image: fetch the file \(git lfs pull\)$")
    annex = tmp_path / "annex.nii.gz"
    annex.write_bytes(b"/annex/objects/MD5E-s12345--0123456789abcdef.nii.gz\n")
    refused(annex, "it is a git-annex pointer, not the image")


def test_truncated_gzip_is_one_line(tmp_path):
    good = save(tmp_path / "good.nii.gz", np.random.default_rng(0).integers(-1000, 1000, (64, 64, 24), np.int16))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    refused(cut, "truncated or corrupt NIfTI data")


def test_other_file_names_are_refused(tmp_path):
    path = save(tmp_path / "v.nii.gz", np.zeros((2, 2, 2), np.uint8))
    other = path.rename(tmp_path / "v.img")
    with pytest.raises(LiverctlError, match="not a NIfTI file name"):
        open_nifti(other)


def test_memory_cap_scales_with_the_machine_and_the_workers(tmp_path, monkeypatch):
    path = save(tmp_path / "v.nii.gz", np.zeros((64, 64, 24), np.int16))  # 192 KB in memory
    monkeypatch.setattr(nifti, "machine_memory", lambda: 1 << 20)  # budget: half of 1 MB per worker
    assert memory_budget(1) == 512 << 10 and memory_budget(4) == 128 << 10
    read_nifti(path, workers=1)
    message = refused(path, r"192.0 KB in memory\), more than the 128.0 KB", workers=4)
    assert "--workers" in message
    monkeypatch.setattr(nifti, "machine_memory", lambda: 256 << 10)
    refused(path, "allows one reader", workers=1)


def test_scaled_data_is_counted_as_float64(tmp_path, monkeypatch):
    img = nib.Nifti1Image(np.zeros((64, 64, 24), np.int16), np.eye(4))
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, str(tmp_path / "scaled.nii.gz"))
    monkeypatch.setattr(nifti, "machine_memory", lambda: 1 << 20)  # 512 KB budget: int16 fits, float64 not
    refused(tmp_path / "scaled.nii.gz", r"768.0 KB in memory")


def test_machine_memory_is_the_physical_memory_or_less():
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < machine_memory() <= physical


def test_highly_compressed_real_masks_still_pass(tmp_path):
    """An empty mask gzipped at level 9 is the best deflate can do (about 1030:1): never refused."""
    data = np.zeros((256, 256, 64), np.uint8)
    path = tmp_path / "empty_mask.nii.gz"
    raw = tmp_path / "empty_mask.nii"
    save(raw, data)
    path.write_bytes(gzip.compress(raw.read_bytes(), 9))
    assert (raw.stat().st_size / path.stat().st_size) > 900
    np.testing.assert_array_equal(read_nifti(path)[1], data)


@pytest.mark.parametrize(
    ("folder", "name"),
    [("totalseg-example", "ct.nii.gz"), ("dcmqi-3slice", "ct.nii.gz"), ("dcmqi-3slice", "label.nii.gz")],
)
def test_real_files_read_exactly(folder, name):
    path = REAL / folder / name
    if not path.exists():
        pytest.skip("real data not available")
    img, data = read_nifti(path)
    np.testing.assert_array_equal(data, np.asanyarray(nib.load(str(path)).dataobj))


def test_read_and_sha256_in_one_read_equals_nibabels_read(tmp_path):
    """The one-read path every command uses gives nibabel's voxels (dtype, shape, values) and the file's
    sha256, for .nii and .nii.gz, several gzip members, a big-endian file, scaled ones (a slope of 0 is no
    scaling), and junk after the voxels."""
    import hashlib

    rng = np.random.default_rng(2)
    volume = rng.integers(-1000, 1000, (9, 7, 5), np.int16)
    files = [save(tmp_path / "a.nii.gz", volume), save(tmp_path / "b.nii", volume)]
    two = tmp_path / "two.nii.gz"  # the same bytes as two gzip members
    plain = gzip.decompress(files[0].read_bytes())
    two.write_bytes(gzip.compress(plain[:400]) + gzip.compress(plain[400:]) + b"\x00" * 16)
    big = nib.Nifti1Image(volume.astype(">i2"), np.eye(4))
    nib.save(big, str(tmp_path / "big.nii.gz"))
    scaled = nib.Nifti1Image(volume, np.eye(4))
    scaled.header.set_slope_inter(0.5, -3.0)
    nib.save(scaled, str(tmp_path / "scaled.nii.gz"))
    byte_scaled = nib.Nifti1Image((volume % 200).astype(np.uint8), np.eye(4))
    byte_scaled.header.set_slope_inter(2.0, 1.0)
    nib.save(byte_scaled, str(tmp_path / "byte_scaled.nii"))
    float_scaled = nib.Nifti1Image(volume.astype(np.float32), np.eye(4))
    float_scaled.header.set_slope_inter(0.25, 0.0)
    nib.save(float_scaled, str(tmp_path / "float_scaled.nii.gz"))
    slope_zero = with_header_fields(save(tmp_path / "slope_zero.nii", volume), scl_slope=0.0, scl_inter=5.0)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(gzip.compress(plain + b"\x01" * 5000))
    tail = tmp_path / "tail.nii"  # MBs of bytes after the voxels, not zeros: the hash is still the whole file's
    tail.write_bytes(plain + b"\x01" * (3 << 20))
    for path in [*files, two, tmp_path / "big.nii.gz", tmp_path / "scaled.nii.gz", tmp_path / "byte_scaled.nii",
                 tmp_path / "float_scaled.nii.gz", slope_zero, junk, tail]:
        expected = np.asanyarray(nib.load(str(path)).dataobj)
        _, got, digest = nifti.read_nifti_and_sha256(path)
        for voxels in (got, read_nifti(path)[1]):
            assert voxels.dtype == expected.dtype and voxels.shape == expected.shape, path
            np.testing.assert_array_equal(voxels, expected)
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_and_sha256_refuses_truncated_and_corrupt_gzip_in_one_line(tmp_path):
    good = save(tmp_path / "good.nii.gz", np.random.default_rng(0).integers(-1000, 1000, (64, 64, 24), np.int16))
    raw = good.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    middle = len(raw) // 2
    (tmp_path / "bad.nii.gz").write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle : middle + 64]) + raw[middle + 64 :])
    for name in ("cut.nii.gz", "bad.nii.gz"):
        with pytest.raises(LiverctlError, match="truncated or corrupt NIfTI data") as caught:
            nifti.read_nifti_and_sha256(tmp_path / name)
        assert "\n" not in str(caught.value) and name in str(caught.value)


def test_many_gzip_members_are_inflated_in_time_that_grows_with_the_file(tmp_path, monkeypatch):
    """Each member's end made zlib copy everything after it: 160,000 empty members (3.2 MB) took 108 s to
    read. What zlib is handed in all must grow with the members' count, not with its square."""
    import zlib

    volume = np.arange(4 * 4 * 2, dtype=np.int16).reshape(4, 4, 2)
    plain = gzip.decompress(save(tmp_path / "v.nii.gz", volume).read_bytes())
    handed, real = [], zlib.decompressobj

    class Counting:  # what liverctl's inflater is handed (nibabel's gzip reads of the header not counted)
        def __init__(self, *args, **kwargs):
            self._inflater, self._ours = real(*args, **kwargs), args == (31,)

        def decompress(self, data, *args):
            handed.append(len(data) if self._ours else 0)
            return self._inflater.decompress(data, *args)

        def __getattr__(self, name):
            return getattr(self._inflater, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    totals = []
    for members in (4000, 8000):
        path = tmp_path / f"members{members}.nii.gz"
        path.write_bytes(gzip.compress(plain[:352]) + gzip.compress(b"") * members + gzip.compress(plain[352:]))
        handed.clear()
        voxels = read_nifti(path)[1]
        np.testing.assert_array_equal(voxels, volume)
        assert not voxels.flags.writeable
        totals.append(sum(handed))
    assert totals[1] < 2.5 * totals[0]  # quadratic: 4 times


def test_a_truncated_gzip_costs_the_memory_of_its_data_not_of_its_header(tmp_path):
    """A header claiming 64 MB over 100 KB of data is within every limit (the gzip ratio, the memory budget);
    reading it must not take the 64 MB before finding the data short."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header["dim"] = [3, 4096, 4096, 2, 1, 1, 1, 1]
    header["vox_offset"] = 352
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + os.urandom(100_000), 1))
    _, peak = traced_peak(lambda: refused(path, "truncated or corrupt NIfTI data"))
    assert peak < 16 << 20


@pytest.mark.parametrize("name", ["long.nii", "long.nii.gz"])
def test_a_file_far_longer_than_its_voxels_costs_the_memory_of_its_voxels(tmp_path, name):
    """Bytes after the voxels (junk, zero padding after the gzip member) were all read into memory for the
    hash and the voxels: 32 MB of them took 32 MB more. They are hashed a piece at a time now."""
    import hashlib

    volume = np.arange(16 * 16 * 4, dtype=np.int16).reshape(16, 16, 4)
    path = save(tmp_path / name, volume)
    with open(path, "ab") as f:
        f.write(b"\0" * (32 << 20))
    (_, got, digest), peak = traced_peak(lambda: nifti.read_nifti_and_sha256(path))
    np.testing.assert_array_equal(got, volume)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert peak < 8 << 20


@pytest.mark.parametrize("scaled", [False, True])
def test_a_gzip_whose_crc_fails_is_refused_by_every_reader(tmp_path, scaled):
    """nibabel stops reading where the voxels end, before the gzip trailer, so a file whose CRC says its data
    is damaged was read as good voxels by evaluate and postprocess (read_nifti), and by ingest where the
    header scales the voxels (it read those through nibabel)."""
    img = nib.Nifti1Image(np.random.default_rng(0).integers(0, 3, (32, 32, 8)).astype(np.int16), np.eye(4))
    if scaled:
        img.header.set_slope_inter(2.0, 0.0)
    nib.save(img, str(tmp_path / "ok.nii.gz"))
    raw = (tmp_path / "ok.nii.gz").read_bytes()
    bad = tmp_path / "crc.nii.gz"
    bad.write_bytes(raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:-4]) + raw[-4:])
    assert np.asanyarray(nib.load(str(bad)).dataobj).shape == (32, 32, 8)  # nibabel reads it without a word
    refused(bad, "truncated or corrupt NIfTI data .*incorrect data check")
    with pytest.raises(LiverctlError, match="incorrect data check"):
        nifti.read_nifti_and_sha256(bad)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"srow_x": [np.nan, 0, 0, 0], "sform_code": 1, "qform_code": 0}, r"affine \(sform\) holds NaN"),
        ({"quatern_b": np.nan, "sform_code": 0, "qform_code": 1}, r"affine \(qform\) holds NaN"),
        ({"pixdim": [1, np.nan, 1, 1, 1, 1, 1, 1], "sform_code": 0, "qform_code": 0}, r"affine \(pixdim\) holds NaN"),
        ({"pixdim": [1, 1, np.inf, 1, 1, 1, 1, 1], "sform_code": 1, "qform_code": 0}, r"voxel spacing holds NaN"),
    ],
)
def test_geometry_that_is_not_finite_is_one_line(tmp_path, fields, match):
    path = with_header_fields(save(tmp_path / "v.nii.gz", np.zeros((4, 4, 4), np.int16)), **fields)
    img = open_nifti(path)  # the voxels can be read ...
    with pytest.raises(LiverctlError, match=match) as info:  # ... but not placed in space
        volume_geometry(img, path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_geometry_of_a_real_file():
    path = REAL / "totalseg-dicom20" / "ct.nii.gz"
    if not path.is_file():
        pytest.skip("real CT samples missing")
    img = open_nifti(path)
    affine, spacing = volume_geometry(img, path)
    assert affine == img.affine.tolist() and spacing == pytest.approx([0.977, 0.977, 2.0], abs=1e-3)


@pytest.mark.parametrize("name", ["CT.NII.GZ", "CT.NII"])
def test_upper_case_names_are_nifti_too(tmp_path, name):
    """The layouts list `CT.NII.GZ` (names from Windows tools and DICOM converters); reading it must not
    then refuse it as 'not a NIfTI file name'."""
    volume = np.random.default_rng(3).integers(-1000, 1000, (9, 7, 5), np.int16)
    lower = save(tmp_path / name.lower(), volume)
    path = lower.rename(tmp_path / name)
    _, got, _ = nifti.read_nifti_and_sha256(path)
    np.testing.assert_array_equal(got, volume)
    np.testing.assert_array_equal(read_nifti(path)[1], volume)
    cut = tmp_path / f"cut-{name}"  # the header is whole, the voxels are not: measured as gzip or not
    cut.write_bytes(path.read_bytes()[:360] if name.endswith(".NII") else gzip.compress(gzip.decompress(path.read_bytes())[:360]))
    refused(cut, "the file holds 360 B" if name.endswith(".NII") else "truncated or corrupt NIfTI data")


def test_a_link_to_nowhere_is_named_as_one(tmp_path):
    """nibabel says 'No such file or no access' of a dangling link (a git-annex file not fetched)."""
    (tmp_path / "ct.nii.gz").symlink_to("annex/objects/ct.nii.gz")
    refused(tmp_path / "ct.nii.gz", "a link that leads to no file")
    (tmp_path / "loop.nii").symlink_to("loop.nii")
    refused(tmp_path / "loop.nii", "a link that leads to no file")


def test_a_file_that_cannot_be_opened_says_why(tmp_path, monkeypatch):
    """A file this user may not read (chmod 000) was 'Cannot work out file type of ...' (nibabel's sniffing
    swallows the PermissionError); so was a folder named like NIfTI. The tests run as root, who may read
    anything: the refusal is made by `open` itself."""
    import builtins

    locked = save(tmp_path / "locked.nii.gz", np.zeros((2, 2, 2), np.int16))
    real_open = builtins.open

    def open_as_another_user(file, *args, **kwargs):
        if str(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_as_another_user)
    refused(locked, r"cannot be opened \(Permission denied\)$")
    (tmp_path / "folder.nii").mkdir()
    refused(tmp_path / "folder.nii", r"cannot be opened \(Is a directory\)$")


def test_a_suffix_of_mixed_case_is_one_line_saying_to_rename(tmp_path):
    path = save(tmp_path / "ct.nii.gz", np.zeros((2, 2, 2), np.int16)).rename(tmp_path / "Ct.Nii.Gz")
    refused(path, "suffix mixes cases \\('.Nii.Gz'\\); rename it to end in '.nii.gz'")


def test_grid_difference_of_a_singular_affine_is_words_not_a_type_error():
    """A header whose sform rows are zero has axes pointing nowhere: aff2axcodes gives None for them, and
    joining those into 'RAS' failed the case as 'ingest failed (TypeError: ...)'."""
    singular, ras = np.diag([0.0, 0.0, 0.0, 1.0]), np.eye(4)
    assert nifti.axis_codes(ras) == "RAS" and nifti.axis_codes(singular) is None
    assert nifti.grid_difference(ras, singular) == "is singular (an axis has no direction)"
    assert nifti.grid_difference(singular, ras) == (
        "orients the axes RAS where the volume's is singular (an axis has no direction)"
    )


def test_qform_sform_difference_says_only_a_real_disagreement():
    """Both set and the same (the real CT with its sform copied into its qform, a float32 quaternion): nothing; a
    turn without a shift is said as such (it read 'is shifted by 0 mm')."""
    from conftest import REAL_DATA

    path = REAL_DATA / "totalseg-dicom20" / "ct.nii.gz"
    if not path.is_file():
        pytest.skip(f"real CT samples not found in {REAL_DATA}")
    img = nib.load(path)
    assert nifti.qform_sform_difference(img) is None  # qform_code 0, as written
    img.set_qform(img.header.get_sform(), code=1)
    assert img.header["qform_code"] == 1 and nifti.qform_sform_difference(img) is None
    c, s = np.cos(0.2), np.sin(0.2)
    turned = img.header.get_sform() @ np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    img.set_qform(turned, code=1)
    assert nifti.qform_sform_difference(img) == "turns or shears the axes otherwise than the sform's (same origin and axis codes)"


def test_fuzz_nifti_readers_give_a_volume_or_one_liverctl_error(tmp_path):
    """Real files with header fields set to odd values (dim, pixdim, datatype, vox_offset, scl_*, q/sform, magic,
    sizeof_hdr, extensions), bytes flipped, truncated, their gzip stream damaged (scripts/fuzz_readers.py nifti: 2300
    such cases found no other outcome), read by ingest's case reader and writer and by read_liver_mask (evaluate,
    postprocess)."""
    from collections import Counter

    from fuzz_script import load_fuzz_script, outcome

    from liverctl.data.case_writer import CaseJob, _write_case
    from liverctl.data.liver_mask import read_liver_mask
    from liverctl.data.sources import CaseFiles

    fuzz = load_fuzz_script()
    bases = [b for b in fuzz.nifti_bases() if not b[0].startswith("totalseg-dicom20")]  # the smaller ones
    if not bases:
        pytest.skip(f"real CT samples not found in {REAL}")
    rng = np.random.default_rng(7)
    outcomes = Counter()
    for case in range(40):
        name, raw, is_label = bases[int(rng.integers(len(bases)))]
        data, what, gzip_flip = fuzz.mutate_nifti(rng, raw, is_label)
        work = tmp_path / str(case)
        work.mkdir()
        path, more = fuzz.nifti_file(rng, work, name, raw, is_label, data, gzip_flip)
        what = f"case {case}: {name} -> {path.name}: {what}{more}"
        folder = REAL / name.split("/")[0]
        labels = (5,) if "multilabel" in name else (1,)
        if is_label:
            outcomes[outcome(lambda path=path, labels=labels: read_liver_mask(path, labels), what)] += 1
            files = CaseFiles("c", "train", folder / "ct.nii.gz", path)
        else:
            files = CaseFiles("c", "train", path, folder / ("label.nii.gz" if "dcmqi" in name else "liver.nii.gz"))
        job = CaseJob(files, str(work / "store"), labels)
        outcomes[outcome(lambda job=job: _write_case(job), what)] += 1
    assert outcomes["ok"] > 15 and outcomes["refused"] > 15, outcomes
