"""The store schema: the array metadata ingest writes itself is zarr-python's, chunk keys, attributes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec

from liverctl.data import schema
from liverctl.errors import LiverctlError


@pytest.mark.parametrize("dtype", [schema.IMAGE_DTYPE, schema.LABEL_DTYPE])
def test_slice_array_metadata_is_what_zarr_python_writes(tmp_path, dtype):
    group = zarr.open_group(str(tmp_path / "z"), mode="w")
    array = group.create_array(
        "a", shape=(5, 4, 3), chunks=schema.slice_chunks((5, 4, 3)), dtype=dtype,
        compressors=BloscCodec(**schema.BLOSC), fill_value=0, dimension_names=schema.DIMENSION_NAMES,
        attributes={schema.EVERY_CHUNK: True},
    )
    written = json.loads((tmp_path / "z" / "a" / "zarr.json").read_text())
    assert written == schema.slice_array_metadata((5, 4, 3), dtype)
    assert schema.slice_chunk_codec(array) is not None  # the plain layout LiverStore reads itself
    group.attrs.update({"k": [1, 2]})
    assert json.loads((tmp_path / "z" / "zarr.json").read_text()) == schema.group_metadata({"k": [1, 2]})


def test_chunks_written_through_the_schema_read_back_with_zarr_python(tmp_path):
    shape = (6, 5, 4)
    values = np.arange(np.prod(shape), dtype=np.float16).reshape(shape)
    values[..., 2] = 0  # the fill value: no chunk file
    schema.write_metadata(tmp_path / "a", schema.slice_array_metadata(shape, values.dtype))
    encode = schema.slice_encoder()
    for z in (0, 1, 3):
        path = schema.slice_chunk_path(tmp_path / "a", z)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(np.ascontiguousarray(values[..., z])))
    assert schema.chunk_key((0, 0, 3)) == "c/0/0/3"
    assert not schema.slice_chunk_path(tmp_path / "a", 2).exists()
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[...], values)


def test_attributes_read_and_update(tmp_path):
    schema.write_metadata(tmp_path, schema.group_metadata({"a": 1}))
    assert schema.is_group(tmp_path) and schema.read_attrs(tmp_path) == {"a": 1}
    assert schema.update_attrs(tmp_path, {"b": 2}) is True
    assert schema.update_attrs(tmp_path, {"b": 2}) is False  # nothing changed: nothing written
    assert zarr.open_group(str(tmp_path), mode="r").attrs.asdict() == {"a": 1, "b": 2}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "zarr.json").write_text("[1, 2]")  # JSON, but not an object
    assert schema.read_metadata(tmp_path / "bad") is None and schema.read_attrs(tmp_path / "bad") == {}
    with pytest.raises(LiverctlError, match="missing or unreadable zarr.json"):
        schema.update_attrs(tmp_path / "missing", {"a": 1})


def test_split_and_fold_codes():
    assert schema.SPLIT_CODES == {"train": 0, "test": 1}
    assert (schema.TEST_FOLD, schema.TRAIN_ONLY_FOLD) == (-1, -2)
    assert list(schema.INDEX_COLUMNS) == ["case", "z", "neighbors", "liver_pixels", "split", "fold"]


def test_a_new_store_is_made_without_deleting_a_folder_on_the_way(tmp_path, monkeypatch):
    """zarr.open_group(mode="w") deletes the folder it opens: `cases/` appeared, vanished and came back while
    a new store was made (a reader listing it in between failed; seen as a flaky ingest test in CI)."""
    import shutil

    from liverctl.data.store_writer import open_or_create_store

    def refuse(path, *args, **kwargs):
        raise AssertionError(f"deleted {path}")

    monkeypatch.setattr(shutil, "rmtree", refuse)
    store = tmp_path / "new" / "liver.zarr"
    open_or_create_store(store)
    open_or_create_store(store)  # again on the store it made: accepted, nothing changed
    root = zarr.open_group(str(store), mode="r")
    assert dict(root.attrs) == {"format": schema.STORE_FORMAT}
    assert list(root.group_keys()) == [schema.CASES_GROUP]


def test_a_list_per_slice_is_one_line_of_zarr_json_that_zarr_python_reads(tmp_path):
    """`chunk_bytes` (and a case's `liver_pixels_per_slice`) went one number a line: 500 slices, 500 lines per
    array. A list of plain values is one line now, the rest indented as before; zarr-python reads it all."""
    sizes = list(range(60_000, 60_500))
    meta = schema.slice_array_metadata((4, 4, 500), np.float16)
    meta["attributes"][schema.CHUNK_BYTES] = sizes
    schema.write_metadata(tmp_path / "s" / "a", meta)
    schema.create_group(tmp_path / "s", {"liver_pixels_per_slice": [0] * 500})
    assert schema.update_attrs(tmp_path / "s", {"fold": 1, "liver_pixels_per_slice": [1] * 500})
    for node, expected in ((tmp_path / "s" / "a", meta), (tmp_path / "s", None)):
        text = (node / "zarr.json").read_text()
        assert text.count("\n") < 50, node  # was over 500
        if expected is not None:
            assert json.loads(text) == expected and '"shape": [4, 4, 500]' in text
    array = zarr.open_array(str(tmp_path / "s" / "a"), mode="r")
    assert array.shape == (4, 4, 500) and array.attrs[schema.CHUNK_BYTES] == sizes
    group = zarr.open_group(str(tmp_path / "s"), mode="r")
    assert group.attrs["liver_pixels_per_slice"] == [1] * 500 and group.attrs["fold"] == 1
