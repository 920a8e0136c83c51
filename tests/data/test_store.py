"""LiverStore: opening, case metadata, the fast chunk path against zarr-python, the slice index."""

from __future__ import annotations

import os
import pickle
import shutil
import warnings

import nibabel as nib
import numpy as np
import pytest
import zarr

from liverctl.data.schema import STORE_FORMAT
from liverctl.data.store import LiverStore
from liverctl.errors import LiverctlError


def test_store_is_a_plain_zarr_group(tiny_store):
    root = zarr.open_group(str(tiny_store), mode="r")
    assert root.attrs["format"] == STORE_FORMAT
    image = root["cases/0/image"]
    assert image.dtype == np.float16
    assert image.chunks == (64, 64, 1)
    assert root["cases/0/label"].dtype == np.uint8
    assert "label" not in root["cases/6"]  # a test case


def test_case_ids_and_splits(tiny_store):
    store = LiverStore.open(tiny_store)
    assert store.case_ids() == [str(i) for i in range(8)]
    assert store.case_ids("train") == [str(i) for i in range(6)]
    assert store.case_ids("test") == ["6", "7"]
    with pytest.raises(LiverctlError, match="test case"):
        store.read_label_slice("6", 0)
    with pytest.raises(LiverctlError, match="test case"):
        store.read_label_volume("6")


def test_no_public_way_to_an_unchecked_zarr_array(tiny_store):
    """`image()`, `label()` and `root` handed out zarr arrays, which read a missing chunk file as zeros and a
    damaged one as a RuntimeError naming nothing; the volume readers go through the checked reader."""
    store = LiverStore.open(tiny_store)
    assert not {"image", "label", "root"} & set(dir(store))
    volume = store.read_image_volume("3")
    assert volume.dtype == np.float16 and volume.shape == (64, 64, 24)
    np.testing.assert_array_equal(volume[..., 7], store.read_slice("3", 7))


def test_fast_path_is_used_and_equals_zarr(tiny_store):
    store = LiverStore.open(tiny_store)
    for case_id in store.case_ids():
        reader = store._reader(case_id, "image")
        assert reader.decode is not None, "local store in ingest's layout must take the fast path"
        image = zarr.open_group(str(tiny_store), mode="r")[f"cases/{case_id}/image"][...]  # zarr-python's reading
        np.testing.assert_array_equal(store.read_image_volume(case_id), image)
        for z in range(image.shape[2]):
            got = store.read_slice(case_id, z)
            assert got.dtype == np.float16 and got.shape == image.shape[:2]
            np.testing.assert_array_equal(got, image[:, :, z])
        if case_id in store.case_ids("train"):
            label = zarr.open_group(str(tiny_store), mode="r")[f"cases/{case_id}/label"][...]
            np.testing.assert_array_equal(store.read_label_volume(case_id), label)
            assert label.any() and not label.all()
            for z in range(label.shape[2]):
                np.testing.assert_array_equal(store.read_label_slice(case_id, z), label[:, :, z])


def test_fast_path_matches_without_it(tiny_store):
    fast = LiverStore.open(tiny_store)
    slow = LiverStore.open(tiny_store)
    reader = slow._reader("2", "image")
    reader.decode = None  # force zarr-python reads
    for z in (0, 7, 23):
        np.testing.assert_array_equal(fast.read_stack("2", z), slow.read_stack("2", z))


def test_stored_slice_equals_source(tiny_store, tiny_dataset):
    store = LiverStore.open(tiny_store)
    img = nib.load(tiny_dataset / "train" / "volume" / "volume-3.nii.gz")
    lab = nib.load(tiny_dataset / "train" / "segmentation" / "segmentation-3.nii.gz")
    for z in range(img.shape[2]):
        np.testing.assert_array_equal(
            store.read_slice("3", z), np.asarray(img.dataobj[..., z]).astype(np.float16)
        )
        np.testing.assert_array_equal(store.read_label_slice("3", z), (np.asarray(lab.dataobj[..., z]) > 0))


def test_read_stack_clamps_at_the_ends(tiny_store):
    store = LiverStore.open(tiny_store)
    first = store.read_stack("1", 0, context=1)
    assert first.shape == (3, 64, 64) and first.dtype == np.float32
    np.testing.assert_array_equal(first[0], first[1])
    np.testing.assert_array_equal(first[2], store.read_slice("1", 1).astype(np.float32))
    last = store.read_stack("1", 23, context=2)
    assert last.shape == (5, 64, 64)
    np.testing.assert_array_equal(last[3], last[2])
    np.testing.assert_array_equal(last[4], last[2])
    with pytest.raises(IndexError):
        store.read_stack("1", 24)
    half = store.read_stack("1", 0, context=1, dtype=np.float16)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half.astype(np.float32), first)


def test_slice_index(tiny_store):
    store = LiverStore.open(tiny_store)
    index = store.slice_index()
    assert len(index) == 8 * 24
    assert index.case_ids == store.case_ids()
    rows = np.flatnonzero(index.case == index.case_ids.index("4"))
    np.testing.assert_array_equal(index.z[rows], np.arange(24))
    np.testing.assert_array_equal(index.neighbors[rows[0]], [0, 0, 1])
    np.testing.assert_array_equal(index.neighbors[rows[-1]], [22, 23, 23])
    label = store.read_label_volume("4")
    np.testing.assert_array_equal(index.liver_pixels[rows], label.sum(axis=(0, 1)))
    assert set(index.fold[index.rows(split="test")]) == {-1}
    folds = store.folds()
    assert set(folds) == set(store.case_ids("train"))
    for case_id, fold in folds.items():
        code = index.case_ids.index(case_id)
        assert set(index.fold[index.case == code]) == {fold}
        assert store.meta(case_id)["fold"] == fold


def test_meta_has_the_documented_fields(tiny_store):
    meta = LiverStore.open(tiny_store).meta("0")
    for key in (
        "complete",
        "split",
        "source",
        "sha256",
        "size",
        "mtime",
        "dtype",
        "shape",
        "affine",
        "spacing",
        "stats",
        "liver_voxels",
        "liver_labels",
        "fold",
    ):
        assert key in meta, key
    assert meta["complete"] is True and meta["dtype"] == "int16"
    assert np.asarray(meta["affine"]).shape == (4, 4)
    stats = meta["stats"]
    assert stats["min"] <= stats["p0.5"] <= stats["p50"] <= stats["p99.5"] <= stats["max"]


def test_store_pickles_and_reopens(tiny_store):
    store = LiverStore.open(tiny_store)
    store.read_slice("0", 0)
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.read_stack("0", 5), store.read_stack("0", 5))


def test_open_errors(tmp_path, tiny_store):
    with pytest.raises(LiverctlError, match="no store here"):
        LiverStore.open(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(LiverctlError, match="not a liverctl store"):
        LiverStore.open(tmp_path / "other.zarr")
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, copy)
    shutil.rmtree(copy / "index")
    with pytest.raises(LiverctlError, match="no slice index"):
        LiverStore.open(copy)


def test_a_damaged_chunk_is_one_line_naming_it(tmp_path, tiny_store):
    """A chunk file damaged after ingest (disk, copy, hand) ended training in a blosc RuntimeError traceback."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, copy)
    chunk = copy / "cases" / "0" / "image" / "c" / "0" / "0" / "5"
    chunk.write_bytes(b"\x02\x01" + bytes(range(40)))
    store = LiverStore.open(copy)
    with pytest.raises(LiverctlError) as info:
        store.read_stack("0", 5)
    message = str(info.value)
    assert message.startswith(f"{chunk}: chunk file of slice 5 of case '0' has 42 bytes where ingest wrote ")
    assert message.endswith("run `liverctl ingest` again on the same data to rebuild that case") and "\n" not in message
    assert store.read_slice("0", 6).shape == (64, 64)  # the others still read


def test_a_case_whose_metadata_is_damaged_says_so(tmp_path, tiny_store):
    """It said "no case '0' in the store" while the index listed it (and ingest rebuilds it)."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, copy)
    (copy / "cases" / "0" / "zarr.json").write_text('{"attributes": {"split": "tr')
    with pytest.raises(LiverctlError) as info:
        LiverStore.open(copy)
    assert str(info.value).startswith(f"{copy / 'cases' / '0' / 'zarr.json'}: missing or unreadable; the store is damaged")
    store = LiverStore(copy)  # not checked at open: the reader still says so
    with pytest.raises(LiverctlError, match="is in the store's index but its zarr.json is missing or unreadable"):
        store.meta("0")
    with pytest.raises(LiverctlError, match="no case 'nope' in the store"):
        store.meta("nope")


def _edit_metadata(path, **changes):
    import json

    meta = json.loads(path.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = meta
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(("node", "changes"), [
    ("cases/0/label", {"codecs": [64, 64, 24]}),  # zarr 3.1: TypeError: Expected dict
    ("index/z", {"node_type": True}),  # ValueError: invalid value for `node_type`
    ("", {"zarr_format": 2**63}),  # zarr 3.1: ValueError: Invalid zarr_format; 3.4: expected Literal
    # zarr 3.1: ZeroDivisionError opening it; 3.4 opens it and its chunk does not decode into that shape
    ("index/split", {"chunk_grid__configuration__chunk_shape": [0]}),
    ("cases/0/label", {"chunk_grid": 1.5}),  # AttributeError: 'float' object has no attribute 'get'
])
def test_a_zarr_json_zarr_cannot_parse_is_one_line_naming_it(tmp_path, tiny_store, node, changes):
    """Anyone's store: a zarr.json holding a value of a type or range zarr-python does not take (an int where a
    codec's table goes) ended `LiverStore.open`, `verify` and training in zarr's TypeError or ValueError traceback,
    and an index column chunked by 0 in a ZeroDivisionError (scripts/fuzz_readers.py json). Now one line names the
    node's file (its zarr.json, or where zarr reads such metadata without a word, the chunk it cannot decode: zarr's
    own wording differs between versions) and says to ingest again."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, copy)
    _edit_metadata(copy / node / "zarr.json", **changes)
    with pytest.raises(LiverctlError) as info, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        store = LiverStore.open(copy)
        store.read_label_slice("0", 0)
    message = str(info.value)
    assert message.startswith(str(copy / node) + os.sep) and "\n" not in message, message
    # zarr 3.4 reads a chunk shape of 0 as 1 with a 700-character UserWarning: that is the damage, not a warning
    # printed over the line (make test-newest showed it)
    assert not [w for w in warned if "zarr" in w.filename], [str(w.message)[:120] for w in warned]
    assert "the store is damaged: run `liverctl ingest` again on the same data" in message, message


def test_odd_attributes_of_a_case_or_its_array_are_one_line_or_read_past(tmp_path, tiny_store):
    """A case's liver_pixels_per_slice holding a count beyond int64 ended LiverStore.open in an OverflowError
    traceback, and an array's zarr.json whose attributes are `true` (no table) ended its first read in TypeError
    (scripts/fuzz_readers.py json). Now the first is a damaged case (store_check.case_damage); the second array is read
    as one without recorded attributes (schema.read_attrs), the same voxels."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, copy)
    expected = LiverStore.open(tiny_store).read_label_slice("0", 3)
    label_json = copy / "cases" / "0" / "label" / "zarr.json"
    _edit_metadata(label_json, attributes=True)
    try:
        read = LiverStore.open(copy).read_label_slice("0", 3)
    except LiverctlError as exc:  # zarr 3.4 refuses such metadata itself (3.1 reads it): then one line naming it
        assert str(exc).startswith(f"{label_json}: zarr cannot read this metadata") and "\n" not in str(exc), exc
    else:
        np.testing.assert_array_equal(read, expected)
    meta = copy / "cases" / "1" / "zarr.json"
    per_slice = __import__("json").loads(meta.read_text())["attributes"]["liver_pixels_per_slice"]
    _edit_metadata(meta, attributes__liver_pixels_per_slice=[-(2**63) - 1, *per_slice[1:]])
    with pytest.raises(LiverctlError, match="its liver_pixels_per_slice is not one count per slice") as info:
        LiverStore.open(copy)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("changes", [{"attributes__folds": ["none"] * 8}, {"attributes__splits": ["train"]},
                                     {"attributes__cases": 5}, {"attributes__sources": [1] * 8}])
def test_index_attributes_that_are_not_one_entry_per_case_are_one_line(tmp_path, tiny_store, changes):
    """The index group's cases, splits and folds were taken as they were: a fold of "none" ended
    LiverStore.folds() (training's split) in ValueError, a list of splits shorter than the cases zip's ValueError
    (scripts/fuzz_readers.py json). Now they are checked where the index attributes are read."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, copy)
    _edit_metadata(copy / "index" / "zarr.json", **changes)
    with pytest.raises(LiverctlError, match="the slice index's attributes are damaged") as info:
        store = LiverStore.open(copy)
        store.folds()
    assert str(info.value).startswith(str(copy / "index" / "zarr.json")) and "\n" not in str(info.value)


def test_an_index_column_claiming_more_rows_than_the_index_holds_is_refused_before_it_is_read(tmp_path, tiny_store,
                                                                                             monkeypatch):
    """An index column's zarr.json claiming 2^31 rows (a few bytes edited) was read as zarr allocates it, 16 GB of
    fill values, before anything compared it with the cases (MemoryError under scripts/fuzz_readers.py's limit).
    Now its rows are compared with the index's slice count first."""
    import tracemalloc

    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, copy)
    _edit_metadata(copy / "index" / "case" / "zarr.json", shape=[2**24])  # 128 MB of int64 claimed
    tracemalloc.start()
    try:
        with pytest.raises(LiverctlError, match="slice index column 'case' \\(16777216 rows\\) does not match the "
                                                "cases it indexes \\(192 slices\\)") as info:
            LiverStore.open(copy)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(str(copy / "index" / "case"))
    assert peak < 16 << 20, peak


def test_a_zarr_json_holding_nan_is_unreadable_not_a_failed_write_back(tmp_path, tiny_store):
    """Python's json reads NaN, Infinity and 1e999, which the metadata writer refuses (JSON has none): a store root
    whose attributes held one passed the reader and made a rerun of ingest fail writing them back (ValueError:
    Out of range float values, a traceback). Now the reader takes such a file for unreadable."""
    from liverctl.data.schema import read_metadata, update_attrs

    for text in ("NaN", "-Infinity", "1e999"):
        node = tmp_path / text
        node.mkdir()
        (node / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"n_folds": ' + text + "}}")
        assert read_metadata(node) is None
        with pytest.raises(LiverctlError, match="missing or unreadable zarr.json"):
            update_attrs(node, {"n_folds": 5})


def test_float16_conversion_through_torch_is_exact():
    import torch

    from liverctl.data.store import convert_float16

    every_float16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):  # 1: the torch path (as in DataLoader workers); 2: numpy
            torch.set_num_threads(n)
            converted = convert_float16(every_float16)
            assert converted.dtype == np.float32
            np.testing.assert_array_equal(converted, every_float16.astype(np.float32))
    finally:
        torch.set_num_threads(threads)


def test_fuzz_store_metadata_gives_a_store_or_one_liverctl_error(tmp_path, tiny_store):
    """A store is anyone's folder: its zarr.json files (root, cases, arrays, index columns) with values replaced by
    other types, NaN, huge numbers, deep nesting, long or odd text, truncated (scripts/fuzz_readers.py mutate_json),
    opened, read and verified. Zarr's own TypeError / ValueError / ZeroDivisionError, AttributeError and
    OverflowError escaped these readers before."""
    from collections import Counter

    from fuzz_script import load_fuzz_script, outcome

    from liverctl.data.store_check import verify_store

    fuzz = load_fuzz_script()
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, copy)
    metas = sorted(p for p in copy.rglob("zarr.json"))
    rng = np.random.default_rng(11)

    def read():
        fuzz.read_whole_store(copy, label_slice=1)

    outcomes = Counter()
    for case in range(50):
        meta = metas[int(rng.integers(len(metas)))]
        original = meta.read_text()
        text, what = fuzz.mutate_json(rng, original)
        meta.write_text(text, encoding="utf-8", errors="surrogatepass")
        what = f"case {case}: {meta.relative_to(copy)}: {what}"
        outcomes[outcome(read, what)] += 1
        outcome(lambda: verify_store(copy), what)
        meta.write_text(original)
    assert outcomes["ok"] > 5 and outcomes["refused"] > 20, outcomes


def test_a_store_linked_to_nowhere_is_said_so(tmp_path):
    """`train --store store` (submit, report the same) where store -> /mnt/big/liver.zarr and /mnt/big is not
    mounted said 'no store here; create one with `liverctl ingest DATA --store PATH`': the store is there, on the
    disk to mount."""
    (tmp_path / "store").symlink_to(tmp_path / "big" / "liver.zarr")
    with pytest.raises(LiverctlError, match=r"store: is a link to .*big/liver.zarr', which does not exist \(a disk or "
                                            r"volume not mounted\?\); mount it, or choose another --store$"):
        LiverStore.open(tmp_path / "store")
