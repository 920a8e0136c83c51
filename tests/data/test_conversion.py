"""Source voxels -> stored arrays: the liver mask and label values counted in one pass, exact."""

from __future__ import annotations

import numpy as np
import pytest

from liverctl.data.conversion import LiverMaskConverter, label_values


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
