"""The three Dice figures of DESIGN.md on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from liverctl.metrics import DiceCounts, dice_figures, slice_counts


def _case(slices):
    """Stack 2D (pred, label) pairs into (X, Y, Z) volumes."""
    pred = np.stack([p for p, _ in slices], axis=-1)
    label = np.stack([t for _, t in slices], axis=-1)
    return pred.astype(bool), label.astype(bool)


def test_slice_counts_per_slice_along_last_axis():
    pred = np.zeros((4, 4, 3), bool)
    label = np.zeros((4, 4, 3), bool)
    pred[:2, :, 1] = True  # 8 predicted
    label[:1, :, 1] = True  # 4 true, all inside the prediction
    label[:, :, 2] = True  # 16 missed
    counts = slice_counts(pred, label)
    assert counts.tolist() == [[0, 0, 0], [4, 4, 0], [0, 0, 16]]
    # validation's batches are (B, X, Y): slices along the first axis give the same rows
    batch_pred, batch_label = np.moveaxis(pred, -1, 0), np.moveaxis(label, -1, 0)
    assert slice_counts(batch_pred, batch_label, axis=0).tolist() == counts.tolist()


def _counts_one_slice_at_a_time(pred, label, axis):
    """(tp, fp, fn) of each slice, the plain way: the reference slice_counts must agree with."""
    rows = []
    for k in range(pred.shape[axis]):
        p, t = np.take(pred, k, axis=axis).astype(bool), np.take(label, k, axis=axis).astype(bool)
        rows.append([int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())])
    return rows


@pytest.mark.parametrize("chunk", [1, 7, 1 << 22], ids=["a voxel row", "a few rows", "all at once"])
@pytest.mark.parametrize(("shape", "axis"), [((9, 6, 5), -1), ((5, 9, 6), 0), ((6, 5, 9), 1)])
def test_slice_counts_are_the_same_however_the_volume_is_cut(monkeypatch, chunk, shape, axis):
    import liverctl.metrics

    monkeypatch.setattr(liverctl.metrics, "_COUNT_CHUNK", chunk, raising=False)
    rng = np.random.default_rng(sum(shape) + axis)
    pred, label = rng.random(shape) > 0.5, (rng.random(shape) > 0.4).astype(np.uint8)
    expected = _counts_one_slice_at_a_time(pred, label, axis)
    assert slice_counts(pred, label, axis).tolist() == expected
    assert slice_counts(np.asfortranarray(pred), label, axis).tolist() == expected  # not C-ordered: still right


@pytest.mark.parametrize(("shape", "axis"), [((0, 4, 3), -1), ((4, 0, 3), -1), ((0, 4, 3), 2), ((3, 0, 4), 0)])
def test_slice_counts_of_a_volume_with_no_voxels_count_nothing_per_slice(shape, axis):
    """A volume with a side of length 0 has slices of no voxels: zero counts for each, as before slice_counts cut
    the volumes into parts (the parts' size was taken from the first row, which there is none of: IndexError)."""
    pred, label = np.zeros(shape, bool), np.zeros(shape, bool)
    counts = slice_counts(pred, label, axis)
    assert counts.shape == (shape[axis], 3) and counts.dtype == np.int64 and not counts.any()
    assert counts.tolist() == _counts_one_slice_at_a_time(pred, label, axis)


@pytest.mark.parametrize("order", ["C", "F"], ids=["C-ordered", "a NIfTI's Fortran order"])
def test_slice_counts_of_a_volume_take_no_copy_of_it(monkeypatch, order):
    """evaluate, auto post-processing and an experiment's decision count whole (X, Y, Z) cases (a decision: every
    threshold and clean-up of every case); a transposed copy of each volume and three temporaries of their size
    were 0.47 GB more at evaluate's peak on a 512 x 512 x 900 case."""
    from memory_peak import traced_peak

    import liverctl.metrics

    monkeypatch.setattr(liverctl.metrics, "_COUNT_CHUNK", 1 << 16, raising=False)  # a tenth of this volume at most
    pred = np.zeros((128, 128, 96), bool)
    label = np.zeros_like(pred)
    pred[20:90, 30:100, 10:70], label[25:95, 30:100, 15:80] = True, True
    pred, label = np.asarray(pred, order=order), np.asarray(label, order=order)
    counts, peak = traced_peak(lambda: slice_counts(pred, label))
    assert counts[:, 0].sum() == (pred & label).sum()
    assert peak < pred.nbytes / 2


def test_three_figures_differ_as_designed():
    full = np.ones((2, 2), bool)
    empty = np.zeros((2, 2), bool)
    half = np.array([[1, 1], [0, 0]], bool)
    # case a: one perfect liver slice and three empty slices predicted empty
    a = _case([(full, full), (empty, empty), (empty, empty), (empty, empty)])
    # case b: one slice half predicted (tp 2, fn 2) and one empty slice
    b = _case([(half, full), (empty, empty)])
    figures = dice_figures({"a": a[0], "b": b[0]}, {"a": a[1], "b": b[1]})
    dice_b = 2 * 2 / (2 * 2 + 0 + 2)  # 2/3
    assert figures["volume_dice"] == pytest.approx((1.0 + dice_b) / 2)
    # slices: a -> 1,1,1,1 ; b -> 2/3, 1  => mean over 6 slices
    assert figures["slice_dice"] == pytest.approx((5 + dice_b) / 6)
    # pooled: tp = 4 + 2, fp = 0, fn = 2
    assert figures["global_dice"] == pytest.approx(2 * 6 / (2 * 6 + 2))
    # the notebook figure (slice Dice) is inflated by empty slices relative to volume Dice
    assert figures["slice_dice"] > figures["volume_dice"]


def test_streaming_accumulation_matches_whole_volumes():
    rng = np.random.default_rng(0)
    pred = rng.random((8, 8, 10)) > 0.5
    label = rng.random((8, 8, 10)) > 0.6
    whole = DiceCounts()
    whole.add_volume("c", pred, label)
    streamed = DiceCounts()
    for z in [3, 0, 9, 1, 2, 4, 5, 6, 7, 8]:  # any order, one slice at a time
        streamed.add_slices("c", slice_counts(pred[..., z : z + 1], label[..., z : z + 1]))
    assert streamed.summary() == pytest.approx(whole.summary())


def test_case_with_nothing_to_find_scores_one_and_a_miss_scores_zero():
    counts = DiceCounts()
    counts.add_volume("none", np.zeros((3, 3, 2), bool), np.zeros((3, 3, 2), bool))
    counts.add_volume("miss", np.zeros((3, 3, 2), bool), np.ones((3, 3, 2), bool))
    assert counts.case_dice() == {"none": 1.0, "miss": 0.0}


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        slice_counts(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool))


def test_no_cases_gives_nan_not_a_fake_score():
    assert np.isnan(DiceCounts().volume_dice())
