"""Bench part "submit": the largest-component clean-up, the RLE of every slice, and CPU inference per
slice (v5, hflip TTA) against the notebook's one-slice-at-a-time loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.bench import baseline
from liverctl.bench.context import BASELINE, LIVER_LABELS, LIVERCTL, Context, why
from liverctl.bench.report import Figure, race_into


def _noisy_mask(label: np.ndarray, seed: int) -> np.ndarray:
    """A prediction-like mask: the label plus scattered false-positive blobs (many components)."""
    rng = np.random.default_rng(seed)
    mask = label.astype(bool).copy()
    x, y, z = mask.shape
    r = max(1, x // 64)
    for _ in range(max(20, z)):
        cx, cy, cz = rng.integers(0, x - r), rng.integers(0, y - r), rng.integers(0, z)
        mask[cx:cx + r, cy:cy + r, cz:cz + 1] = True
    return mask


def measure_submit(ctx: Context) -> list[Figure]:
    from liverctl.data.liver_mask import read_liver_mask
    from liverctl.infer.postprocess import parse_postprocess
    from liverctl.infer.rle import encode_volume

    s = ctx.settings
    case_id, volume_path, label_path = ctx.cases[0]
    mask = _noisy_mask(read_liver_mask(label_path, LIVER_LABELS)[1], s.seed)
    shape = "x".join(map(str, mask.shape))

    post = Figure("postprocess_seconds", f"submit: largest-component clean-up of one {shape} mask "
                  "(liverctl postprocess vs scipy.ndimage)", "s", "baseline", higher_is_better=False)
    race_into(post, {BASELINE: lambda: baseline.notebook_largest_component(mask),
                     LIVERCTL: lambda: parse_postprocess("largest")(mask)}, s.repeats)

    rle = Figure("rle_seconds", f"submit: run-length encoding of all {mask.shape[-1]} slices",
                 "s", "baseline", higher_is_better=False)
    race_into(rle, {BASELINE: lambda: [baseline.notebook_rle(mask[..., z]) for z in range(mask.shape[-1])],
                    LIVERCTL: lambda: encode_volume(mask)}, s.repeats)

    infer = Figure("inference_seconds_per_slice",
                   f"submit: inference seconds per slice on the CPU ({s.preset}, {s.size}x{s.size}, hflip TTA; "
                   "liverctl vs notebook one slice at a time)", "s/slice", "baseline",
                   higher_is_better=False, target="<= 1.0")
    try:
        _measure_inference(ctx, infer, volume_path, case_id)
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        infer.note = why(exc)
    return [post.settle(), rle.settle(), infer.settle()]


def _measure_inference(ctx: Context, fig: Figure, volume_path: Path, case_id: str) -> None:
    from liverctl.data.nifti import open_nifti
    from liverctl.train.models import build_model

    s = ctx.settings
    cfg = ctx.config()
    model = build_model(cfg, pretrained=False).eval()
    volume = baseline.window_to_unit(np.asanyarray(open_nifti(volume_path).dataobj),
                                     tuple(cfg["data"]["window"]))
    depth = volume.shape[-1]
    n = min(s.infer_slices, depth)
    z0 = (depth - n) // 2
    works = {BASELINE: lambda: baseline.notebook_predict_slices(model, volume, list(range(z0, z0 + n)))}
    try:
        works[LIVERCTL] = _liverctl_predict_fn(ctx, model, case_id, range(z0, z0 + n))
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        fig.note = why(exc)
    with ctx.torch.inference_mode():
        race_into(fig, works, s.repeats, warmup=1, per=n)


def _liverctl_predict_fn(ctx: Context, model, case_id: str, zs: range) -> Callable[[], Any]:
    """liverctl's prediction of slices `zs` (consecutive) of a store case as `submit` predicts them: the
    preset's TTA; batched under AMP on CUDA; on the CPU one slice per pass with the config's
    `infer.cpu_threads` and `infer.cpu_channels_last` (liverctl/infer/cpu.py)."""
    from liverctl.infer.predict import RunModel, predict_case_probabilities, read_case_volume

    cfg = ctx.config()
    store = ctx.store()
    # predict reads each case once (read_case_volume) and then works from memory; time the same
    window = read_case_volume(store, case_id)[..., zs.start:zs.stop]
    stats = store.meta(case_id).get("stats") or {}
    run = RunModel(run_dir=ctx.work, model=model, cfg=cfg)
    infer = cfg["infer"]
    return lambda: predict_case_probabilities(run, window, stats, tta=infer["tta"],
                                              batch_size=int(infer["batch_size"]), amp="off",
                                              cpu_threads=int(infer.get("cpu_threads", 0)),
                                              channels_last=bool(infer.get("cpu_channels_last", False)))
