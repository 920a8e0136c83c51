"""Validation on whole held-out cases: loss at input size, Dice counts at each slice's own size."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from liverctl.infer.predict import probabilities_at
from liverctl.metrics import DiceCounts, slice_counts
from liverctl.train import distributed


def validate(model, loader, *, loss_fn, case_ids_by_code: list[str], precision, device, info, threshold: float = 0.5,
             keep_going: Callable[[int, int], bool] | None = None) -> dict | None:
    """val_loss and the three Dice figures (metrics.py), reduced over all ranks; None when `keep_going(done,
    total)`, asked after each batch, said False on any rank (the time limit): the validation was abandoned.

    Batches: image float32 (B, C, S, S), mask uint8 (B, 1, S, S), label (B, X, Y) uint8, case code (B,) (an index
    into `case_ids_by_code`, every case id of the store), z (B,).
    Masks are made exactly as `submit` makes them: float32 sigmoid at the model's size, probabilities
    resized back to (X, Y) (`liverctl.infer.predict.probabilities_at`), then `>= threshold`. Thresholding the
    logits (`> log(t / (1 - t))`) disagreed on voxels whose logit lies within ~3e-8 below 0, which the
    float32 sigmoid rounds to exactly 0.5: `submit` counts them as liver.
    """
    import torch

    counts = DiceCounts()
    loss_sum, n, bad_logits, abandoned = 0.0, 0, 0, False
    model.eval()
    with torch.no_grad():
        for done, (image, mask, label, code, _z) in enumerate(loader, start=1):
            image, mask = image.to(device, non_blocking=True), mask.to(device, non_blocking=True).float()
            with precision.autocast_context(device):
                logits = model(image)
            logits = logits.float()
            bad_logits += int((~torch.isfinite(logits)).sum())
            loss_sum += float(loss_fn(logits, mask)) * image.shape[0]
            n += image.shape[0]
            probs = probabilities_at(torch.sigmoid(logits), tuple(label.shape[-2:]))
            pred = (probs[:, 0] >= threshold).cpu().numpy()
            rows = slice_counts(pred, label.numpy().astype(bool), axis=0)  # (B, 3): tp, fp, fn per slice
            codes = code.numpy()
            for case in np.unique(codes):
                counts.add_slices(case_ids_by_code[int(case)], rows[codes == case])
            if keep_going is not None and not keep_going(done, len(loader)):
                abandoned = True
                break
    model.train()
    # a rank that abandons still joins this collective, which tells the others (each on its own clock)
    loss_sum, n, bad_logits, abandoned = distributed.sum_across(
        info, [loss_sum, float(n), float(bad_logits), float(abandoned)], device
    )
    if abandoned:
        return None
    merged = DiceCounts()
    for part in distributed.gather_objects(info, counts):
        merged.merge(part)
    out = merged.summary()
    out["val_loss"] = loss_sum / n if n else float("nan")
    if bad_logits:  # a model that emits NaN must not be scored on its thresholded (empty) masks
        out.update(volume_dice=float("nan"), slice_dice=float("nan"), global_dice=float("nan"))
    return out
