"""A damaged store is named, never read as plausible data: a missing or empty chunk file, an index that does
not match its cases; ingest builds a damaged case again; stores from before every chunk was written still read.

Zarr reads a missing chunk file as the fill value: before ingest wrote every chunk, a store copied
incompletely read a slice of liver as "no liver" and a slice of CT as 0 HU, and trained on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.config import resolve_config
from liverctl.data import dataset as ds
from liverctl.data.ingest import ingest_folder
from liverctl.data.schema import CHUNK_BYTES, CHUNK_CRC32, EVERY_CHUNK, chunk_checksum, slice_chunk_path
from liverctl.data.store import LiverStore
from liverctl.errors import LiverctlError
from liverctl.infer.predict import read_case_volume

DEPTH = 24  # slices of every tiny case (conftest.TINY)


@pytest.fixture
def copy(tmp_path, tiny_store) -> Path:
    out = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, out)
    return out


def chunk(store: Path, case: str, name: str, z: int) -> Path:
    return slice_chunk_path(store / "cases" / case / name, z)


def liver_slice(store: Path, case: str = "0") -> int:
    per_slice = LiverStore.open(store).meta(case)["liver_pixels_per_slice"]
    return int(np.flatnonzero(per_slice)[len(np.flatnonzero(per_slice)) // 2])


def test_ingest_writes_every_chunk_file_and_says_so(tiny_store):
    store = LiverStore.open(tiny_store)
    for case in store.case_ids():
        names = ["image", "label"] if case in store.case_ids("train") else ["image"]
        for name in names:
            folder = tiny_store / "cases" / case / name
            files = {int(p.name): p.stat().st_size for p in (folder / "c" / "0" / "0").iterdir()}
            assert sorted(files) == list(range(DEPTH))
            sizes = [files[z] for z in range(DEPTH)]
            sums = [chunk_checksum(slice_chunk_path(folder, z).read_bytes()) for z in range(DEPTH)]
            assert json.loads((folder / "zarr.json").read_text())["attributes"] == {
                EVERY_CHUNK: True, CHUNK_BYTES: sizes, CHUNK_CRC32: sums}
            assert sum(CHUNK_CRC32 in line for line in (folder / "zarr.json").read_text().splitlines()) == 1
    label = store.read_label_volume("0")  # slices without liver are there too, as zeros
    assert not label[..., 0].any() and label.any()


@pytest.mark.parametrize("name", ["label", "image"])
def test_a_missing_chunk_file_is_one_line_naming_it_on_every_read_path(copy, name):
    z = liver_slice(copy)  # a slice with liver: its mask read as all zeros before
    missing = chunk(copy, "0", name, z)
    missing.unlink()
    expected = f"{missing}: chunk file of slice {z} is missing"

    with pytest.raises(LiverctlError) as info:
        LiverStore.open(copy)
    message = str(info.value)
    assert message.startswith(f"{expected} (1 of {DEPTH} missing)") and "\n" not in message
    assert "run `liverctl ingest` again on the same data to rebuild that case" in message

    store = LiverStore(copy)  # opened unchecked: the file went missing after open (a reader in a loader worker)
    read = store.read_label_slice if name == "label" else store.read_slice
    with pytest.raises(LiverctlError, match="^" + str(expected)):
        read("0", z)
    with pytest.raises(LiverctlError, match="^" + str(expected)):
        store.read_label_volume("0") if name == "label" else read_case_volume(store, "0")  # report, oof / predict
    store._reader("0", name).decode = None  # zarr-python's path
    with pytest.raises(LiverctlError, match="^" + str(expected)):
        read("0", z)

    cfg = resolve_config("demo", ["data.input_size=64", "data.augment=none"], {"data.store": str(copy)})
    index = LiverStore(copy).slice_index()
    row = int(np.flatnonzero((index.case == index.case_ids.index("0")) & (index.z == z))[0])
    data = ds.SliceDataset(LiverStore(copy), np.array([row]), cfg)
    with pytest.raises(LiverctlError, match="^" + str(expected)):
        data.batch([(0, 0)])


def test_train_on_a_store_with_a_missing_chunk_is_refused_in_one_line(copy, tmp_path):
    missing = chunk(copy, "3", "label", liver_slice(copy, "3"))
    missing.unlink()
    result = CliRunner().invoke(app, ["train", "--preset", "demo", "--store", str(copy), "--runs-dir",
                                      str(tmp_path / "runs")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {missing}: chunk file of slice")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_an_empty_chunk_file_is_named_and_ingest_builds_that_case_again(copy, tiny_dataset, tiny_store):
    """Read, it was "cannot be decoded (RuntimeError: error during blosc decompression: 0)" (zarr-python's
    path, where report and submit read labels: that RuntimeError), and ingest skipped the case as unchanged."""
    empty = chunk(copy, "6", "image", 3)  # a test case
    empty.write_bytes(b"")  # a copy cut short
    store = LiverStore.open(copy)  # the check at open lists files and leaves their sizes to the reader
    with pytest.raises(LiverctlError, match=f"^{empty}: chunk file of slice 3 is empty; the store is damaged"):
        read_case_volume(store, "6")
    summary = ingest_folder(tiny_dataset, store=copy, workers=1)
    assert summary.ok and summary.ingested == ["6"]
    assert any(note.startswith(f"{empty}: case '6' was damaged") for note in summary.notes)
    np.testing.assert_array_equal(LiverStore.open(copy).read_slice("6", 3), LiverStore.open(tiny_store).read_slice("6", 3))


def test_ingest_again_on_the_same_data_rebuilds_a_case_whose_chunk_files_are_missing(copy, tiny_dataset, tiny_store):
    """Ingest trusted `complete=true`: a rerun skipped the case as unchanged and the store stayed damaged."""
    for z in (0, liver_slice(copy)):
        chunk(copy, "0", "label", z).unlink()
    chunk(copy, "4", "image", 5).unlink()
    summary = ingest_folder(tiny_dataset, store=copy, workers=1)
    assert summary.ok and sorted(summary.ingested) == ["0", "4"] and len(summary.unchanged) == 6
    store, reference = LiverStore.open(copy), LiverStore.open(tiny_store)
    for case in ("0", "4"):
        np.testing.assert_array_equal(store.read_label_volume(case), reference.read_label_volume(case))
        np.testing.assert_array_equal(read_case_volume(store, case), read_case_volume(reference, case))
    assert ingest_folder(tiny_dataset, store=copy, workers=1).ingested == []  # whole again


def test_a_damaged_case_no_source_holds_is_a_failure_naming_it(tiny_dataset, tmp_path):
    data, store = tmp_path / "data", tmp_path / "s.zarr"
    shutil.copytree(tiny_dataset, data)
    ingest_folder(data, store=store, workers=1)
    (data / "train" / "volume" / "volume-0.nii.gz").unlink()  # the case's files left the source since
    (data / "train" / "segmentation" / "segmentation-0.nii.gz").unlink()
    missing = chunk(store, "0", "image", 2)
    missing.unlink()
    summary = ingest_folder(data, store=store, workers=1)
    assert len(summary.failures) == 1
    assert summary.failures[0].startswith(f"{missing}: case '0' is damaged (chunk file of slice 2 is missing")
    assert "none of the sources holds it" in summary.failures[0]


def test_an_index_column_that_does_not_match_its_cases_is_named_and_ingest_rebuilds_it(copy, tiny_dataset):
    (copy / "index" / "z" / "c" / "0").unlink()  # the column read as zeros: every row slice 0
    with pytest.raises(LiverctlError, match=f"^{copy / 'index' / 'z'}: slice index column 'z' "):
        LiverStore.open(copy)
    summary = ingest_folder(tiny_dataset, store=copy, workers=1)
    assert summary.ok and summary.ingested == []
    assert LiverStore.open(copy).slice_index().z[:3].tolist() == [0, 1, 2]

    group = zarr.open_group(str(copy / "index"), mode="a")  # a column shorter than the cases' slices
    short = group["liver_pixels"][:-DEPTH]
    del group["liver_pixels"]
    group.create_array("liver_pixels", shape=short.shape, dtype=short.dtype, fill_value=0)[...] = short
    with pytest.raises(LiverctlError, match=f"slice index column 'liver_pixels' \\({8 * DEPTH - DEPTH} rows\\) does "
                                            f"not match the cases it indexes \\({8 * DEPTH} slices\\)"):
        LiverStore.open(copy)


def as_written_before(store: Path) -> None:
    """Make `store` what ingest wrote before it wrote every chunk: no attribute, no file for a slice of zeros."""
    for meta_path in store.glob("cases/*/*/zarr.json"):
        meta = json.loads(meta_path.read_text())
        meta["attributes"] = {}
        meta_path.write_text(json.dumps(meta, indent=2))
        array = zarr.open_array(str(meta_path.parent), mode="r")
        for z in range(array.shape[2]):
            if not array[:, :, z].any():
                slice_chunk_path(meta_path.parent, z).unlink(missing_ok=True)


def test_a_store_from_before_every_chunk_was_written_reads_as_before(copy, tiny_dataset, tiny_store):
    as_written_before(copy)
    assert not chunk(copy, "0", "label", 0).exists()
    store, reference = LiverStore.open(copy), LiverStore.open(tiny_store)  # no spurious error
    for case in store.case_ids():
        np.testing.assert_array_equal(read_case_volume(store, case), read_case_volume(reference, case))
    for case in store.case_ids("train"):
        np.testing.assert_array_equal(store.read_label_volume(case), reference.read_label_volume(case))
    store._reader("0", "label").decode = None  # zarr-python's path: an absent slice of zeros is no error either
    np.testing.assert_array_equal(store.read_label_slice("0", 0), reference.read_label_slice("0", 0))

    summary = ingest_folder(tiny_dataset, store=copy, workers=1)  # nothing is built again, and it says why
    assert summary.ok and summary.ingested == [] and len(summary.unchanged) == 8
    assert any("8 cases were ingested before ingest wrote every chunk file" in note for note in summary.notes)

    missing = chunk(copy, "0", "label", liver_slice(copy))  # its liver_pixels_per_slice counts liver there
    missing.unlink()
    with pytest.raises(LiverctlError, match=f"^{missing}: chunk file of slice"):
        LiverStore.open(copy)
    with pytest.raises(LiverctlError, match=f"^{missing}: chunk file of slice"):
        LiverStore(copy).read_label_volume("0")
    assert ingest_folder(tiny_dataset, store=copy, workers=1).ingested == ["0"]
    LiverStore.open(copy)


def test_an_array_of_another_depth_than_its_case_is_named_at_open(copy):
    """The index (built from the case's attributes) said 24 slices where the array held 20: a loader worker
    ended in an IndexError traceback at slice 20, or, with a deeper array, its extra slices were never read."""
    meta_path = copy / "cases" / "2" / "image" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"][2] = 20
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(LiverctlError, match=f"^{meta_path}: array shape \\[64, 64, 20\\] differs from the case's "
                                            "shape \\[64, 64, 24\\]; the store is damaged"):
        LiverStore.open(copy)



def test_a_case_shape_of_someone_s_long_text_is_quoted_cut_in_the_line(copy):
    """A case's zarr.json is anyone's file: a shape of 200,000 characters (scripts/fuzz_readers.py json, seed 0
    case 37) was printed whole, a line of 200,210 characters; quoted and cut with "…" now."""
    meta_path = copy / "cases" / "2" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["shape"] = ["x" * 200_000 + "\x1b[2J"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(LiverctlError) as info:
        LiverStore.open(copy)
    message = str(info.value)
    assert "differs from the case's shape ['xxx" in message and "x…; the store is damaged" in message
    assert len(message) < 400 + len(str(copy)), len(message)


REBUILT_BY_INGEST = "the store is damaged: run `liverctl ingest` again on the same data to rebuild that case"


def damage(path: Path, how: str) -> None:
    """Damage a chunk file that stays there: cut to half, overwritten with text or with the chunk of another slice
    (of another size), or its compressed data after the 16-byte blosc header overwritten (its size kept)."""
    raw = path.read_bytes()
    if how == "cut short":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "text":
        path.write_text("not a chunk\n" * 10)
    elif how == "another slice":
        others = [p for p in path.parent.iterdir() if p.stat().st_size != len(raw)]
        path.write_bytes(others[0].read_bytes())  # a plausible chunk: it decodes, to that slice
    else:
        path.write_bytes(raw[:16] + b"\xff" * (len(raw) - 16))


@pytest.mark.parametrize("how", ["cut short", "text", "another slice"])
def test_a_chunk_file_cut_short_or_overwritten_is_named_and_ingest_builds_that_case_again(
    copy, tiny_dataset, tiny_store, how
):
    """Read, a file cut short or of text was "chunk of slice 11 cannot be decoded (RuntimeError: ...)" and another
    slice's chunk read as that slice's mask without a word; a rerun of ingest skipped the case as unchanged. The
    size each chunk file was written with (`chunk_bytes`) tells all three, from the length read and ingest's stat."""
    z = liver_slice(copy, "2")
    bad = chunk(copy, "2", "label", z)
    written = bad.stat().st_size
    damage(bad, how)
    store = LiverStore.open(copy)  # open lists files and leaves their sizes to the reader
    with pytest.raises(LiverctlError) as info:
        store.read_label_volume("2")
    message = str(info.value)
    assert message == (f"{bad}: chunk file of slice {z} of case '2' has {bad.stat().st_size} bytes where ingest wrote "
                       f"{written} (cut short or overwritten); {REBUILT_BY_INGEST}")
    summary = ingest_folder(tiny_dataset, store=copy, workers=1)
    assert summary.ok and summary.ingested == ["2"]
    assert any(note.startswith(f"{bad}: case '2' was damaged (chunk file of slice {z}") for note in summary.notes)
    reference = LiverStore.open(tiny_store)
    np.testing.assert_array_equal(LiverStore.open(copy).read_label_volume("2"), reference.read_label_volume("2"))
    assert ingest_folder(tiny_dataset, store=copy, workers=1).ingested == []


def without_checksums(store: Path) -> None:
    """Make `store` one written before ingest recorded chunk checksums (`CHUNK_CRC32` gone from every array)."""
    for meta_path in (store / "cases").glob("*/*/zarr.json"):
        meta = json.loads(meta_path.read_text())
        del meta["attributes"][CHUNK_CRC32]
        meta_path.write_text(json.dumps(meta))


def test_a_chunk_whose_compressed_data_is_damaged_says_to_delete_the_case(copy, tiny_dataset, tiny_store):
    """Its size unchanged, ingest cannot see the damage without decoding every chunk: in a store without checksums
    the line says to delete the case's folder (ingest then builds it), not to run ingest again, which would skip it
    as unchanged (--verify cannot tell it there either)."""
    without_checksums(copy)
    bad = chunk(copy, "1", "image", 5)
    damage(bad, "data")
    with pytest.raises(LiverctlError) as info:
        LiverStore.open(copy).read_stack("1", 5)
    assert str(info.value).startswith(f"{bad}: chunk file of slice 5 of case '1' cannot be decoded (RuntimeError")
    assert str(info.value).endswith(f"delete {copy / 'cases' / '1'} and run `liverctl ingest` again to rebuild that case")
    assert ingest_folder(tiny_dataset, store=copy, workers=1).ingested == []  # what a rerun alone does
    assert ingest_folder(tiny_dataset, store=copy, workers=1, verify=True).ingested == []
    shutil.rmtree(copy / "cases" / "1")
    assert ingest_folder(tiny_dataset, store=copy, workers=1).ingested == ["1"]
    np.testing.assert_array_equal(LiverStore.open(copy).read_stack("1", 5), LiverStore.open(tiny_store).read_stack("1", 5))


VERIFY_FINDS_IT = "the store is damaged: run `liverctl ingest` again on the same data with --verify to rebuild that case"


def flip_a_bit(path: Path) -> None:
    """Flip the lowest bit of a chunk file's last byte: its size kept; blosc decodes the image chunks of the tiny
    store so damaged, to other values, without a word."""
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["bit flip", "data"])
def test_a_chunk_damaged_in_place_is_named_by_ingest_verify_and_built_again(copy, tiny_dataset, tiny_store, how):
    """A bit flipped in a chunk file read as other values without a word, and nothing could find it: the file's
    size is the one ingest wrote and blosc keeps no checksum. `ingest --verify` reads every chunk file against the
    checksum ingest recorded (`chunk_crc32`), names the file and builds the case again from its source."""
    bad = chunk(copy, "1", "image", 5)
    flip_a_bit(bad) if how == "bit flip" else damage(bad, "data")
    reference = LiverStore.open(tiny_store).read_stack("1", 5)
    if how == "bit flip":
        assert not np.array_equal(LiverStore.open(copy).read_stack("1", 5), reference)  # the damage, unnoticed
    else:
        with pytest.raises(LiverctlError) as info:  # the reader's line points at the verification
            LiverStore.open(copy).read_stack("1", 5)
        assert str(info.value).startswith(f"{bad}: chunk file of slice 5 of case '1' cannot be decoded (")
        assert str(info.value).endswith(VERIFY_FINDS_IT)
    assert ingest_folder(tiny_dataset, store=copy, workers=1).ingested == []  # sizes alone cannot tell
    summary = ingest_folder(tiny_dataset, store=copy, workers=1, verify=True)
    assert summary.ok and summary.ingested == ["1"] and summary.verified == 8 and summary.unverifiable == []
    assert summary.verified_bytes > 0
    damaged = [note for note in summary.notes if "damaged" in note]
    assert damaged == [f"{bad}: case '1' was damaged (chunk file of slice 5 of case '1' holds other bytes than ingest "
                       "wrote, of the same size (its checksum differs: bits flipped, or another chunk of that size "
                       "copied over)); ingested again from its source"]
    np.testing.assert_array_equal(LiverStore.open(copy).read_stack("1", 5), reference)
    again = ingest_folder(tiny_dataset, store=copy, workers=1, verify=True)
    assert again.ingested == [] and not [note for note in again.notes if "damaged" in note]


def test_ingest_verify_on_a_store_without_checksums_says_so_in_one_line(copy, tiny_dataset):
    """A store written before ingest recorded checksums cannot have its chunk files' bytes verified: one note
    naming the cases and what to do, the presence and sizes still checked, no case rebuilt, no failure."""
    without_checksums(copy)
    shutil.rmtree(copy / "cases" / "6")  # one case built by this run: it gets checksums, so it is not named
    result = CliRunner().invoke(app, ["ingest", str(tiny_dataset), "--store", str(copy), "--workers", "1", "--verify"])
    assert result.exit_code == 0, result.output
    assert "verified 7 cases already in the store: every chunk file read" in result.stdout
    assert "7 without checksums (note below)" in result.stdout
    notes = [line for line in result.stderr.splitlines() if "checksums" in line]
    assert notes == [f"note: {copy}: 7 cases (0, 1, 2, 3, 4, 5, ...) were stored before ingest recorded chunk "
                     "checksums: only their chunk files' presence and sizes could be verified, not their bytes; to "
                     f"have checksums recorded, delete those case folders under {copy / 'cases'} (or ingest into a "
                     "new --store) and ingest again"], result.stderr


def rechunked(store: Path, case: str, name: str, depth: int) -> None:
    """Rewrite a case's array as another tool might: chunks of `depth` slices, so it is read through zarr-python."""
    from zarr.codecs import BloscCodec

    folder = store / "cases" / case / name
    values = zarr.open_array(str(folder), mode="r")[...]
    shutil.rmtree(folder)
    array = zarr.create_array(str(folder), shape=values.shape, chunks=(*values.shape[:2], depth), dtype=values.dtype,
                              compressors=BloscCodec(cname="lz4", clevel=9, shuffle="shuffle"), fill_value=0,
                              attributes={EVERY_CHUNK: True}, config={"write_empty_chunks": True})
    array[...] = values


def test_a_damaged_chunk_read_by_zarr_python_in_a_loader_worker_is_one_line_naming_it(copy, tmp_path):
    """On zarr-python's path (a store not in ingest's layout) blosc's RuntimeError came out of the loader worker
    as a traceback ending `RuntimeError: error during blosc decompression: -1`, naming no file."""
    for case in LiverStore.open(copy).case_ids("train"):
        rechunked(copy, case, "label", 4)
    bad = copy / "cases" / "3" / "label" / "c" / "0" / "0" / "2"  # slices 8 to 11
    damage(bad, "cut short")
    assert LiverStore.open(copy)._reader("3", "label").decode is None
    result = CliRunner().invoke(app, ["train", "--preset", "demo", "--store", str(copy), "--runs-dir",
                                      str(tmp_path / "runs"), "--set", "data.input_size=64", "--set",
                                      "data.num_workers=1", "--set", "train.epochs=1", "-q"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: {bad}: chunk file of slice ") and " of case '3' cannot be decoded (" in errors[0]
    assert errors[0].endswith(f"delete {copy / 'cases' / '3'} and run `liverctl ingest` again to rebuild that case")


def test_a_rerun_of_ingest_reads_each_array_metadata_once(copy, tiny_dataset, monkeypatch):
    """The damage check read each case's array `zarr.json`, then the count of cases from before every chunk was
    written read each image's again."""
    from liverctl.data import schema, store_check

    reads: list[Path] = []
    read_metadata = schema.read_metadata

    def counted(node_dir):
        reads.append(Path(node_dir))
        return read_metadata(node_dir)

    monkeypatch.setattr(schema, "read_metadata", counted)  # also read_attrs'
    monkeypatch.setattr(store_check, "read_metadata", counted)
    summary = ingest_folder(tiny_dataset, store=copy, workers=1)
    assert summary.ok and summary.ingested == [] and not [n for n in summary.notes if "every chunk file" in n]
    arrays = [path for path in reads if path.name in ("image", "label")]
    assert len(arrays) == len(set(arrays)) == 8 + 6  # 8 images, 6 labels


def test_an_index_column_that_cannot_be_decoded_is_named_and_ingest_rebuilds_it(copy, tiny_dataset):
    """Its chunk cut short, every command that opened the store ended in zstd's RuntimeError traceback."""
    column = copy / "index" / "z" / "c" / "0"
    column.write_bytes(column.read_bytes()[:-8])
    with pytest.raises(LiverctlError) as info:
        LiverStore.open(copy)
    assert str(info.value).startswith(f"{column}: slice index column 'z' cannot be decoded (")
    assert str(info.value).endswith("run `liverctl ingest` again on the same data to rebuild the index")
    assert ingest_folder(tiny_dataset, store=copy, workers=1).ok
    assert LiverStore.open(copy).slice_index().z[:3].tolist() == [0, 1, 2]


def test_verify_without_the_source_names_every_damaged_case_and_changes_nothing(copy, tmp_path):
    """`liverctl verify` (a store copied to a machine without its source): every case read against its checksums,
    each damaged one named in one line, exit status 2; a whole store passes; a store without checksums gets the
    note; a folder that is no store is one line."""
    runner = CliRunner()
    whole = runner.invoke(app, ["verify", "--store", str(copy)])
    assert whole.exit_code == 0, whole.output
    assert f"{copy}: verified 8 cases, every chunk file read (" in whole.stdout and "no damage found" in whole.stdout
    assert " 8/8 " in whole.stderr, whole.stderr  # the progress knows how many cases there are ('8/?' before)
    flipped = [chunk(copy, "1", "image", 5), chunk(copy, "6", "image", 20)]
    for path in flipped:
        flip_a_bit(path)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    result = runner.invoke(app, ["verify", "--store", str(copy)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors[:2] == [f"error: {path}: chunk file of slice {z} of case '{case}' holds other bytes than ingest "
                          "wrote, of the same size (its checksum differs: bits flipped, or another chunk of that size "
                          f"copied over); {VERIFY_FINDS_IT}" for path, z, case in ((flipped[0], 5, "1"), (flipped[1], 20, "6"))]
    assert errors[2] == (f"error: 2 damaged cases above; run `liverctl ingest SOURCE --store {copy} --verify` with the "
                         "data they were ingested from to rebuild them")
    assert "verified 8 cases" in result.stdout and ": 2 damaged" in result.stdout
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before  # reads only
    old = tmp_path / "old.zarr"
    shutil.copytree(copy, old)
    without_checksums(old)
    unverified = runner.invoke(app, ["verify", "--store", str(old)])
    assert unverified.exit_code == 0, unverified.output
    assert "8 without checksums (note below)" in unverified.stdout
    assert [line for line in unverified.stderr.splitlines() if "checksums" in line] == [
        f"note: {old}: 8 cases (0, 1, 2, 3, 4, 5, ...) were stored before ingest recorded chunk checksums: only their "
        f"chunk files' presence and sizes could be verified, not their bytes; to have checksums recorded, delete those "
        f"case folders under {old / 'cases'} (or ingest into a new --store) and ingest again"]
    dry = runner.invoke(app, ["ingest", str(tmp_path), "--store", str(copy), "--verify", "--dry-run"])
    assert dry.exit_code == 2 and dry.stderr == ("error: --verify rebuilds the damaged cases it finds and --dry-run "
                                                 f"writes nothing; to check the store without writing, run `liverctl "
                                                 f"verify --store {copy}`\n"), dry.output
    nothing = runner.invoke(app, ["verify", "--store", str(tmp_path)])
    assert nothing.exit_code == 2 and nothing.stderr.count("\n") == 1, nothing.output
    assert nothing.stderr.startswith(f"error: {tmp_path}: not a liverctl store")
    # run from another folder than the store's: nothing there, said as `train` and `submit` say it ("not a
    # liverctl store (no zarr.json ...)" spoke of a zarr.json in a folder that is not there)
    absent = runner.invoke(app, ["verify", "--store", str(tmp_path / "store" / "liver.zarr")])
    assert absent.exit_code == 2 and absent.stderr == (f"error: {tmp_path / 'store' / 'liver.zarr'}: no store here; "
                                                       "create one with `liverctl ingest DATA --store PATH`\n")


def test_verify_beside_an_ingest_waits_for_it_rather_than_answering_for_a_store_it_did_not_read(tmp_path, tiny_dataset,
                                                                                            monkeypatch):
    """`liverctl verify` started beside an ingest answered for a store it had not read: "verified 6 cases ... no
    damage found" for a store that then held 10, or that line and then "store has no slice index (ingest did not
    finish); run `liverctl ingest` again" (each of 6 pairs started together on the demo data); "no damage found"
    of the real CT being rebuilt, or a zarr KeyError traceback (5 and 1 of 6 pairs). Now it refuses, in one line,
    while an ingest holds the store and where one replaced a case or the index as verify read it."""
    from liverctl.data import store_check
    from liverctl.data.store_writer import exclusive_work_dir

    data, aside, store = tmp_path / "data", tmp_path / "aside", tmp_path / "s.zarr"
    shutil.copytree(tiny_dataset, data)
    aside.mkdir()
    case_files = [("volume", "volume-5.nii.gz"), ("segmentation", "segmentation-5.nii.gz")]
    for folder, name in case_files:
        (data / "train" / folder / name).rename(aside / name)
    ingest_folder(data, store=store, workers=1)
    with exclusive_work_dir(store), pytest.raises(LiverctlError, match="s.zarr: `liverctl ingest` is writing this "
                                                                        "store now; wait for it to end, then verify"):
        store_check.verify_store(store)

    real_verify_case, added = store_check.verify_case, []

    def verify_case_as_an_ingest_adds_a_case(case_dir, attrs):
        if not added:
            added.append(True)
            for folder, name in case_files:
                (aside / name).rename(data / "train" / folder / name)
            assert ingest_folder(data, store=store, workers=1).ingested == ["5"]
        return real_verify_case(case_dir, attrs)

    monkeypatch.setattr(store_check, "verify_case", verify_case_as_an_ingest_adds_a_case)
    with pytest.raises(LiverctlError, match="s.zarr: `liverctl ingest` changed this store while verify read it; "
                                            "once it has ended, run `liverctl verify` again"):
        store_check.verify_store(store)
    monkeypatch.setattr(store_check, "verify_case", real_verify_case)
    assert store_check.verify_store(store).cases == 8


def test_a_case_whose_liver_counts_are_not_one_per_slice_is_damaged_and_ingest_rebuilds_it(copy, tiny_dataset):
    """The index's liver_pixels column is built from each case's liver_pixels_per_slice: a count of {} there passed
    a rerun of ingest as an unchanged case and ended it in TypeError building the index (scripts/fuzz_readers.py
    json, seed 5). Now the case is damaged: LiverStore.open names it, and ingest builds it again."""
    meta_path = copy / "cases" / "1" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    counts = meta["attributes"]["liver_pixels_per_slice"]
    meta["attributes"]["liver_pixels_per_slice"] = [*counts[:2], {}, *counts[3:]]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(LiverctlError, match=f"^{meta_path}: its liver_pixels_per_slice is not one count per slice"):
        LiverStore.open(copy)
    summary = ingest_folder(tiny_dataset, store=copy, workers=1)
    assert summary.ok and summary.ingested == ["1"], summary.failures
    assert LiverStore.open(copy).meta("1")["liver_pixels_per_slice"] == counts
