"""Bench part "training": images/s of the full pipeline (store -> loader -> the trainer's own step,
`liverctl.train.step.guarded_step`) against the model alone on a batch already in memory, and against
the same step fed by the notebook's loader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from liverctl.bench.context import BASELINE, LIVERCTL, Context, baseline_dataset, pick_samples, race, why
from liverctl.bench.loader import liverctl_loader
from liverctl.bench.report import Figure

MODEL_ONLY = "model only"


def train_step_fn(ctx: Context) -> tuple[Callable[[Any, Any], None], str, str]:
    """The trainer's step (`guarded_step`) on a session of the preset's model, loss and optimiser:
    autocast as `train.amp` resolves on this device (off on a CPU), loss in float32 outside it, the
    GradScaler, gradient clipping and the NaN guard. Returns (step(image, mask), device, precision mode)."""
    torch = ctx.torch
    from liverctl.device import resolve_precision
    from liverctl.train.losses import build_loss
    from liverctl.train.models import build_model
    from liverctl.train.nan_guard import NaNGuard
    from liverctl.train.session import build_optimizer, step_session
    from liverctl.train.step import guarded_step

    cfg = ctx.config()
    device = torch.device(ctx.device)
    precision = resolve_precision(cfg["train"]["amp"], device)
    model = build_model(cfg, pretrained=False).to(device).train()
    session = step_session(cfg, device, precision, model, build_loss(cfg).to(device),
                           build_optimizer(cfg, model.parameters()),
                           torch.amp.GradScaler(device.type, enabled=precision.needs_scaler))
    guard = NaNGuard()

    def step(image, mask) -> None:
        image, mask = image.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        guarded_step(session, image, mask, guard)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step, device.type, precision.mode


def _model_only(step, image, mask, steps: int) -> int:
    """`steps` optimizer steps on one batch already in memory; returns the number of images."""
    for _ in range(steps):
        step(image, mask)
    return steps * len(image)


def _train_epoch(step, loader, finish: Callable[[Any], tuple] | None = None) -> int:
    """Train on one epoch of `loader` (liverctl's batches through `finish` first, as the trainer does);
    returns the number of images."""
    seen = 0
    for batch in loader:
        image, mask = finish(batch) if finish is not None else batch
        step(image, mask)
        seen += len(image)
    return seen


def _figures(ctx: Context) -> tuple[Figure, Figure]:
    s = ctx.settings
    vs_model = Figure("train_pipeline_vs_model",
                      f"training: images/s, full pipeline from the store vs model only ({s.preset}, "
                      f"{s.size}x{s.size}; batch {s.train_batch} x {s.train_steps} steps on a CPU, "
                      f"batch {s.loader_batch} with AMP on a GPU)", "images/s",
                      MODEL_ONLY, higher_is_better=True, target=">= 0.9")
    vs_base = Figure("train_pipeline_vs_baseline",
                     "training: images/s, full pipeline, liverctl loader vs notebook loader", "images/s",
                     "baseline", higher_is_better=True)
    return vs_model, vs_base


def _works(ctx: Context, step, batch: int, steps: int) -> tuple[dict[str, Callable[[], int]], str | None]:
    """The three timed parts (model only, notebook loader, liverctl loader), and why liverctl's is missing."""
    from liverctl.bench import baseline

    torch, s = ctx.torch, ctx.settings
    # model only: on tensors already on the device (the step's transfer is then a no-op)
    image = torch.rand(batch, 3, s.size, s.size, device=ctx.device)
    mask = (torch.rand(batch, 1, s.size, s.size, device=ctx.device) > 0.7).float()
    samples = pick_samples(ctx, steps * batch)
    base_loader = baseline.notebook_loader(baseline_dataset(ctx, samples.cache_rows, True), batch, s.seed)
    works = {
        MODEL_ONLY: lambda: _model_only(step, image, mask, steps),
        BASELINE: lambda: _train_epoch(step, base_loader),
    }
    try:
        loader, mine = liverctl_loader(ctx, ctx.config(), samples.store_rows, batch)
        works[LIVERCTL] = lambda: _train_epoch(step, loader, lambda b: mine.finish(b, ctx.device))
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        return works, why(exc)
    return works, None


def measure_training(ctx: Context) -> list[Figure]:
    s, torch = ctx.settings, ctx.torch
    vs_model, vs_base = _figures(ctx)
    try:
        step, device, precision = train_step_fn(ctx)
    except Exception as exc:  # noqa: BLE001 - one failed part must not sink the run
        vs_model.note = vs_base.note = why(exc)
        return [vs_model.settle("the trainer's step failed"), vs_base.settle()]
    # A CPU-sized batch here; on a GPU the preset's own batch and enough steps to be worth timing.
    batch, steps = (s.train_batch, s.train_steps) if device == "cpu" else (s.loader_batch, max(s.train_steps, 10))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    works, failed = _works(ctx, step, batch, steps)
    # warm-up round: allocator and autotuning, liverctl's persistent workers
    timings, race_failed = race(works, s.repeats, warmup=1)
    works.clear()  # let liverctl's persistent workers go
    ctx.profiles["training"] = {
        "device": device, "precision": precision, "batch": batch, "steps_per_repeat": steps,
        "gpu_peak_memory_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
    }
    vs_model.note = vs_base.note = failed or race_failed
    count = steps * batch
    vs_model.baseline, vs_model.seconds[MODEL_ONLY] = timings[MODEL_ONLY].rate(count), timings[MODEL_ONLY].seconds
    vs_base.baseline, vs_base.seconds[BASELINE] = timings[BASELINE].rate(count), timings[BASELINE].seconds
    if LIVERCTL in timings:
        vs_model.liverctl = vs_base.liverctl = timings[LIVERCTL].rate(count)
        vs_model.seconds[LIVERCTL] = vs_base.seconds[LIVERCTL] = timings[LIVERCTL].seconds
    # the 0.9 target is for a GPU; on a CPU the model and the loader workers share the same cores
    return [vs_model.settle(None if device == "cuda" else "no GPU"), vs_base.settle()]
