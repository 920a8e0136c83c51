"""Inference over store cases: 2D / 2.5D stacks, batched, AMP on CUDA, flip TTA, ensembles of runs.

For each case, every slice is read from the store once; batch by batch, 2.5D stacks are cut from it as
`store.read_stack` cuts them in training (the run's context, clamped at the ends), normalised
(`liverctl.data.dataset.normalize`, each slice once per batch) and resized
(`liverctl.data.dataset.resize_stack`, each stack) as in training, once for all the runs of an ensemble that
share a `preparation_key` (context, input size, normalisation); each run predicts that batch (with TTA, each
flip a view of it, undone exactly before averaging), and the probabilities are resized back to the slice's own
(X, Y). Probabilities are averaged over TTA views, then over models (summed in run order, as adding each run's
volume would); one case at a time, so memory holds one (X, Y, Z) float32 volume and a batch per key.

The TTA and ensemble functions take any callable `model(x: (N, C, H, W)) -> logits (N, 1, H, W)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.config import in_channels
from liverctl.device import inference_precision
from liverctl.errors import LiverctlError
from liverctl.infer.cpu import CPU_BATCH, cpu_model, thread_tuner, tuned_threads
from liverctl.plural import plural
from liverctl.printable import quoted
from liverctl.suggest import did_you_mean

# name -> the flips averaged; each entry is the tensor dims flipped (() = the image itself).
# The image is (..., X, Y) as stored: "hflip" flips the last axis, "vflip" the one before.
TTA_MODES: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "hflip": ((), (-1,)),
    "vflip": ((), (-2,)),
    "hflip+vflip": ((), (-1,), (-2,)),
    "flips": ((), (-1,), (-2,), (-2, -1)),
}


# The modes most used first (hflip: the presets' default; flips: every flip): the order in which names equally
# near a mistyped one are offered ("flip" is as near "hflip", "vflip" and "flips").
TTA_BY_USE = ("hflip", "flips", "vflip", "hflip+vflip", "none")


def parse_tta(name: str) -> tuple[tuple[int, ...], ...]:
    """TTA mode name -> flips; an unknown name fails with the valid ones and the nearest (two at most of those
    equally near, the most used first)."""
    key = str(name).strip().lower()
    if key not in TTA_MODES:
        near = did_you_mean(key, TTA_BY_USE, n=2, ties_only=True)
        hint = f" ({near})" if near else ""
        raise LiverctlError(f"unknown TTA mode {quoted(name)}{hint}; valid: {', '.join(TTA_MODES)}")
    return TTA_MODES[key]


def tta_probabilities(model: Callable, x, tta: str = "none", amp: str = "auto"):
    """Sigmoid probabilities averaged over the TTA views, each flip undone before averaging.

    Shape: x (N, C, H, W) float32 -> (N, 1, H, W) float32. Logits are cast to float32 before the
    sigmoid so that fp16 autocast never saturates them.
    """
    import torch

    flips = parse_tta(tta)
    total = None
    with torch.inference_mode(), inference_precision(amp, x.device).autocast_context(x.device):
        for dims in flips:
            view = torch.flip(x, dims) if dims else x
            logits = model(view)
            if logits.shape[0] != x.shape[0] or logits.shape[-2:] != x.shape[-2:] or logits.ndim != 4:
                raise ValueError(f"model returned shape {tuple(logits.shape)} for input {tuple(x.shape)}")
            probs = torch.sigmoid(logits.float())
            probs = torch.flip(probs, dims) if dims else probs
            total = probs if total is None else total + probs
    return total / len(flips)


def probabilities_at(probs, size: tuple[int, int]):
    """Probabilities (N, 1, S, S) at the model's size -> (N, 1, X, Y) at the slice's, bilinear; unchanged
    where the sizes agree. Submit's masks and training's validation Dice both threshold this (`>= t`)."""
    import torch.nn.functional as F

    if tuple(probs.shape[-2:]) == tuple(size):
        return probs
    return F.interpolate(probs, size=tuple(size), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------- runs and cases


def input_size(cfg: dict) -> int:
    """cfg.data.input_size: the side of the square the model sees."""
    return int(cfg["data"]["input_size"])


def _first_conv_in_channels(model) -> int | None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return int(module.in_channels)
    return None


@dataclass
class RunModel:
    """One trained run ready to predict: its model (eval mode, on the device) and resolved config."""

    run_dir: Path
    model: Any
    cfg: dict
    which: str = "best"
    cases: dict | None = None  # the checkpoint's record of the cases it trained and validated on (None: older)
    recorded_cfg: dict | None = None  # the config as the checkpoint recorded it (cfg: today's new keys filled in)
    # which checkpoint this is: the sha256 of the bytes loaded, and the epoch and save time it records (a
    # submission names them; `liverctl.runs.summary` compares the save time with the sidecar's to tell a replaced one)
    sha256: str | None = None
    epoch: int | None = None
    saved_at: float | None = None
    # `infer.cpu.cpu_model`'s channels-last copy of `model` for the CPU, (the model it copied, the copy): made once
    cpu_copy: tuple[Any, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def context(self) -> int:
        return int(self.cfg["data"]["context"])

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def checkpoint(self) -> Path:
        from liverctl.runs.folder import checkpoint_path

        return checkpoint_path(self.run_dir, self.which)


def load_run_models(
    run_dirs: Sequence[str | Path], which: str = "best", device: str = "cpu", *,
    verify: Mapping[Path, Callable[[str], None]] | None = None,
) -> list[RunModel]:
    """Load each run's checkpoint (`liverctl.train.models.load_run_checkpoint`) and check it is usable.

    Fails in one line if a run has no checkpoint or its model's input channels disagree with its
    config's context (2 * context + 1). `verify`: run folder (as given) -> the check of the bytes of its
    checkpoint, run on exactly the bytes loaded before they are parsed (`liverctl.runs.checkpoint.load_plain`).
    Each checkpoint is read into memory once, hashed (`RunModel.sha256`) and loaded from those bytes.
    """
    from liverctl.runs.checkpoint import RECORDED_CONFIG
    from liverctl.runs.validation_cases import CASES_KEY
    from liverctl.train.models import load_run_checkpoint

    runs = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        digests: list[str] = []

        def checked(digest: str, check=(verify or {}).get(run_dir), digests=digests) -> None:
            digests.append(digest)  # one hash of the bytes read anyway, 0.3 s for the largest preset's 137 MB
            if check is not None:
                check(digest)

        model, info = load_run_checkpoint(run_dir, which=which, device=device, verify=checked)
        cfg = info["config"]
        try:
            context = int(cfg["data"]["context"])
            input_size(cfg)
        except (KeyError, TypeError, ValueError) as exc:
            raise LiverctlError(f"checkpoint config lacks a usable data.context / data.input_size ({exc})", path=run_dir) from None
        channels = _first_conv_in_channels(model)
        if channels is not None and channels != in_channels(cfg):
            raise LiverctlError(
                f"model takes {plural(channels, 'input channel')} but its config's context {context} means "
                f"{in_channels(cfg)}",
                path=run_dir,
            )
        saved_at = info.get("saved_at")
        runs.append(RunModel(run_dir=run_dir, model=model, cfg=cfg, which=which, cases=info.get(CASES_KEY),
                             recorded_cfg=info.get(RECORDED_CONFIG), sha256=digests[0] if digests else None,
                             epoch=info.get("epoch"),
                             saved_at=float(saved_at) if isinstance(saved_at, (int, float)) else None))
    return runs


def _normalize(stack: np.ndarray, cfg: dict, stats: dict) -> np.ndarray:
    from liverctl.data.dataset import normalize

    return normalize(stack, cfg, stats)


def _resize(stack: np.ndarray, size: int) -> np.ndarray:
    """The training resize (bilinear, `liverctl.data.dataset.resize_stack`). (C, X, Y) -> (C, size, size)."""
    from liverctl.data.dataset import resize_stack

    return resize_stack(stack, size)


def read_case_volume(store, case_id: str) -> np.ndarray:
    """Every slice of a case's image, read once. Shape: -> float16 (X, Y, Z), HU as stored.

    Each slice is contiguous in memory (the array is a view of (Z, X, Y)), so that writing a slice here and
    cutting 2.5D stacks from it (`stack_at`, `predict_case_probabilities`) copy whole slices: in an (X, Y, Z)
    C-order volume a slice is a gather with a stride of Z values (a batch of 16 stacks 512 x 512 x 3: 100-140
    ms from there, 40-70 ms from here; this read 2.3-2.8x faster; 2 loaded cores).
    """
    x_size, y_size, depth = (int(s) for s in store.meta(case_id)["shape"])
    slices = np.empty((depth, x_size, y_size), dtype=np.float16)
    for z in range(depth):
        slices[z] = store.read_slice(case_id, z)
    return np.moveaxis(slices, 0, -1)


def stack_indices(zs: np.ndarray, context: int, depth: int) -> np.ndarray:
    """The slices of the 2.5D stack at each z: z-context .. z+context, clamped at the ends, as
    `LiverStore.read_stack` and the store's index cut them. Shape: zs (B,) -> (B, 2 * context + 1)."""
    return np.clip(np.asarray(zs)[:, None] + np.arange(-context, context + 1), 0, depth - 1)


def stack_at(volume: np.ndarray, z: int, context: int) -> np.ndarray:
    """Slices z-context .. z+context, clamped at the ends, as `LiverStore.read_stack` returns them.

    Shape: volume (X, Y, Z) -> float32 (2 * context + 1, X, Y).
    """
    zs = stack_indices(np.array([z]), context, volume.shape[2])[0]
    return np.ascontiguousarray(np.moveaxis(volume, -1, 0)[zs], dtype=np.float32)


def cpu_batching(batch_size: int, device: Any) -> tuple[int, bool]:
    """(slices per forward pass, prefetch on a thread?) for `device`: as asked on CUDA, `CPU_BATCH` and no
    prefetch on the CPU."""
    if _is_cuda(device):
        return max(1, int(batch_size)), True
    return CPU_BATCH, False


def _is_cuda(device: Any) -> bool:
    return str(getattr(device, "type", device)).startswith("cuda")


def preparation_key(cfg: dict) -> tuple:
    """What a run's batches are prepared from besides the volume: (context, input size, `norm_key`). Runs with
    equal keys (the folds of one experiment) are fed the same stacks to the bit, so an ensemble prepares each
    batch once per key."""
    from liverctl.data.dataset import norm_key

    return int(cfg["data"]["context"]), input_size(cfg), norm_key(cfg)


def _pass_cost_key(run: RunModel) -> tuple:
    """Runs with equal keys cost alike per slice (architecture and input): they share a `ThreadTuner`."""
    import json

    return json.dumps(run.cfg.get("model"), sort_keys=True, default=str), preparation_key(run.cfg)


def prepare_batch(volume: np.ndarray, zs: np.ndarray, cfg: dict, stats: dict) -> np.ndarray:
    """The 2.5D stacks at consecutive slices `zs`, normalised and resized as `cfg` says (its `preparation_key`).

    Shape: volume (X, Y, Z), zs (B,) -> float32 (B, C, S, S). Every slice the batch holds is normalised once (not
    once per stack that holds it, 2 * context + 1 times: 16 stacks of 512 x 512 x 3 took 2.4-2.9x as long), then
    each stack resized as validation resizes it (all the batch's slices in one cv2 call would be faster, but cv2's
    last bit depends on the channel count, and predictions would drift from validation's at the threshold).
    """
    context, size, depth = int(cfg["data"]["context"]), input_size(cfg), volume.shape[2]
    first, last = max(int(zs[0]) - context, 0), min(int(zs[-1]) + context + 1, depth)
    planes = _normalize(np.moveaxis(volume, -1, 0)[first:last], cfg, stats)
    stacks = planes[stack_indices(zs, context, depth) - first]
    if stacks.shape[-2:] == (size, size):
        return stacks
    return np.stack([_resize(stack, size) for stack in stacks])


def predict_case_probabilities(run: RunModel, volume: np.ndarray, stats: dict, **options: Any) -> np.ndarray:
    """Probability of liver for every voxel of one case's HU volume, from one run. Shape: volume (X, Y, Z) ->
    float32 (X, Y, Z). `options`: those of `predict_ensemble_sum`."""
    return predict_ensemble_sum([run], volume, stats, **options)


def predict_ensemble_sum(
    runs: Sequence[RunModel],
    volume: np.ndarray,
    stats: dict,
    *,
    tta: str = "none",
    batch_size: int = 16,
    device: str = "cpu",
    amp: str = "auto",
    cpu_threads: int = 0,
    channels_last: bool = False,
    on_slices: Callable[[int], None] | None = None,
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """The sum over `runs`, in their order, of each run's probability of liver for every voxel of one case, each
    times its `weights` entry where given (a weighted ensemble's mean when they sum to 1).

    Shape: volume (X, Y, Z) -> float32 (X, Y, Z); the bits of adding the runs' own volumes one after another.
    Batch by batch: (B, C, X, Y) normalised stacks -> resized as in training to (B, C, S, S), S = data.input_size,
    once for all the runs with the same `preparation_key` (the folds of an experiment) -> each run's TTA
    probabilities (B, 1, S, S), each flip a view of that one batch -> resized back (bilinear) to (B, 1, X, Y) and
    added into the sum. Memory: the sum, and one batch per key. On CUDA, batches of `batch_size` under AMP, the
    next one prepared on a thread while the models run. On the CPU (`liverctl.infer.cpu`): one slice per pass, no
    prefetch thread (it competed with torch's threads), torch's thread count `cpu_threads` (0: chosen by timing, a
    `ThreadTuner` for each architecture and input), and with `channels_last` a channels-last copy of each model
    (about 1.5x faster, but its probabilities differ from the contiguous model's by ~1e-7, so a voxel at the
    threshold can differ from what training's validation predicted: off by default). `on_slices(n)`: after each
    run's pass over n slices.
    """
    import torch

    if not runs:
        raise ValueError("an ensemble needs at least one run")
    if weights is not None and len(weights) != len(runs):
        raise ValueError(f"{len(weights)} weights for {len(runs)} runs")
    x_size, y_size, depth = volume.shape
    batch_size, prefetch = cpu_batching(batch_size, device)
    on_cpu = torch.device(device).type == "cpu"  # (MPS takes one slice per pass, as before, but no CPU tuning)
    nhwc = on_cpu and channels_last
    models = [cpu_model(run) if nhwc else run.model for run in runs]
    tuners = [thread_tuner(cpu_threads, _pass_cost_key(run)) if on_cpu else None for run in runs]
    layout = torch.channels_last if nhwc else torch.preserve_format
    keys = [preparation_key(run.cfg) for run in runs]
    configs = {key: run.cfg for key, run in zip(keys, runs, strict=True)}  # one config per key: the first run's

    def prepare(z0: int) -> dict[tuple, np.ndarray]:
        zs = np.arange(z0, min(z0 + batch_size, depth))
        return {key: prepare_batch(volume, zs, cfg, stats) for key, cfg in configs.items()}

    out = np.empty((x_size, y_size, depth), dtype=np.float32)
    starts = list(range(0, depth, batch_size))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, starts[0]) if starts and prefetch else None
        for i, z0 in enumerate(starts):
            prepared = pending.result() if prefetch else prepare(z0)
            if prefetch and i + 1 < len(starts):
                pending = pool.submit(prepare, starts[i + 1])
            batches = {key: torch.from_numpy(np.ascontiguousarray(stacks, dtype=np.float32)).to(device, memory_format=layout)
                       for key, stacks in prepared.items()}
            for r, (model, key, tuner) in enumerate(zip(models, keys, tuners, strict=True)):
                batch = batches[key]
                with tuned_threads(tuner, len(batch)):
                    probs = tta_probabilities(model, batch, tta, amp)
                probs = probabilities_at(probs, (x_size, y_size))[:, 0].permute(1, 2, 0).cpu().numpy()
                if weights is not None:
                    probs *= np.float32(weights[r])
                if r == 0:
                    out[..., z0 : z0 + len(batch)] = probs
                else:
                    out[..., z0 : z0 + len(batch)] += probs
                if on_slices is not None:
                    on_slices(len(batch))
    return out


def predict_cases(
    runs: Sequence[RunModel],
    store,
    case_ids: Sequence[str],
    weights: Sequence[float] | None = None,
    **options: Any,
) -> Iterator[tuple[str, np.ndarray]]:
    """Stream (case id, ensemble-mean probabilities (X, Y, Z) float32), one case at a time: each run's weight in the
    mean its `weights` entry (the caller makes them sum to 1), else 1 / the number of runs.

    `options`: the keyword options of `predict_ensemble_sum` (tta, batch_size, device, amp, cpu_threads,
    channels_last, on_slices), the same for every run.
    """
    parse_tta(options.get("tta", "none"))
    for case_id in case_ids:
        # Yielded straight from the call, never bound here: while the caller thresholds, cleans and encodes a case,
        # this generator holds neither its HU volume nor its probabilities (a 512 x 512 x 900 case: 0.5 GB and 0.9 GB).
        yield case_id, _case_mean(runs, store, case_id, weights, options)


def _case_mean(runs: Sequence[RunModel], store, case_id: str, weights: Sequence[float] | None,
               options: Mapping[str, Any]) -> np.ndarray:
    """One case's ensemble mean (X, Y, Z) float32 for `predict_cases`, divided in place: one float32 volume, not two."""
    volume = read_case_volume(store, case_id)
    stats = store.meta(case_id).get("stats") or {}
    total = predict_ensemble_sum(runs, volume, stats, weights=weights, **options)
    del volume
    if weights is None:
        total /= np.float32(len(runs))
    return total
