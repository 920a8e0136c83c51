"""Source voxels -> stored arrays: the liver mask and label values counted in one pass, exact."""

from __future__ import annotations

import numpy as np
import pytest

from liverctl.data.conversion import Float16Converter, LiverMaskConverter, float16_stats, label_values


@pytest.mark.parametrize(
    "values",
    [
        np.array([0, 1, 1, 2], np.uint8),  # a few values: comparison passes
        np.array([0, 0], np.int16),
        np.array([-5, 300, 300, 0], np.int16),  # a wide range: bincount
        np.arange(40, dtype=np.uint8),
        np.array([0.5, 1.0, 0.5], np.float32),  # float: np.unique
    ],
)
def test_label_values_equal_numpy_unique(values):
    got_values, got_counts = label_values(np.asfortranarray(values.reshape(1, 1, -1)))
    expected_values, expected_counts = np.unique(values, return_counts=True)
    np.testing.assert_array_equal(got_values, expected_values)
    np.testing.assert_array_equal(got_counts, expected_counts)
    assert got_values.dtype == values.dtype


@pytest.mark.parametrize("liver_labels", [None, (1,), (1, 2), (300,)])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
def test_liver_mask_slab_by_slab_equals_isin_and_counts_each_slice(liver_labels, dtype):
    rng = np.random.default_rng(0)
    label = np.asfortranarray(rng.integers(-1, 4, size=(9, 7, 21)).astype(dtype))
    if dtype == "uint8":
        label[label == 255] = 0
    expected = (label > 0) if liver_labels is None else np.isin(label, liver_labels)
    converter = LiverMaskConverter(liver_labels)
    slabs = [converter.convert(label[:, :, z0 : z0 + 8]) for z0 in range(0, 21, 8)]
    assert all(s.dtype == np.uint8 and s.flags.c_contiguous for s in slabs) and slabs[0].shape == (8, 9, 7)
    np.testing.assert_array_equal(np.concatenate(slabs).transpose(1, 2, 0), expected.astype(np.uint8))
    assert converter.per_slice == [int(n) for n in expected.sum(axis=(0, 1))]


def test_float16_stats_are_exact():
    rng = np.random.default_rng(1)
    values = (rng.normal(40, 300, size=(17, 13, 9))).astype(np.float16)
    stats = float16_stats(values)
    flat = values.astype(np.float64).ravel()
    assert stats["min"] == flat.min() and stats["max"] == flat.max()
    assert stats["mean"] == pytest.approx(flat.mean()) and stats["std"] == pytest.approx(flat.std())
    for q in (0.5, 1, 5, 50, 95, 99, 99.5):
        assert stats[f"p{q:g}"] == pytest.approx(np.percentile(flat, q))


@pytest.mark.parametrize("order", ["F", "C"])  # NIfTI hands over Fortran order; anything else must work too
@pytest.mark.parametrize("dtype", ["int16", "uint8", "uint16", "float32", "float64"])
def test_float16_conversion_and_its_stats_equal_astype_and_a_second_pass(dtype, order):
    """The writer's one-pass conversion (table for small ints) is `astype(float16)` bit for bit, and the
    statistics it counts on the way are those of the converted volume."""
    rng = np.random.default_rng(3)
    if dtype in ("float32", "float64"):
        values = rng.normal(40, 300, size=(11, 7, 37)).astype(dtype) * 1.37 - 0.3
        values[0, 0, 0] = -0.0
    else:
        info = np.iinfo(dtype)
        high = min(info.max, 65504)  # ingest refuses larger values (beyond float16's range)
        values = rng.integers(info.min, high, size=(11, 7, 37), endpoint=True).astype(dtype)
    values = np.asfortranarray(values) if order == "F" else np.ascontiguousarray(values)
    converter = Float16Converter(values.dtype)
    slabs = [converter.convert(values[:, :, z0 : z0 + 16]) for z0 in range(0, 37, 16)]
    got = np.concatenate(slabs).transpose(1, 2, 0)
    expected = values.astype(np.float16)
    assert slabs[0].flags.c_contiguous and slabs[0].shape == (16, 11, 7)
    np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))
    assert converter.hist.stats() == float16_stats(expected)
