"""Starting one training run from what `liverctl train` was given (`train_run`).

A new run: the config resolved from the preset and the overrides, checked before any folder exists
(`preflight`), its folder made and locked. A resumed run: its folder found and locked, its saved config
with the new overrides, refused when it has no epoch left to train. Under torchrun every rank calls
`train_run`; rank 0 alone holds the lock and writes, the others train into the folder rank 0 made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.config import apply_overrides, is_none, read_config, resolve_config
from liverctl.errors import LiverctlError
from liverctl.experiment.folder import experiment_of_fold
from liverctl.plural import plural
from liverctl.printable import first_line, quoted
from liverctl.runs.checkpoint import load_checkpoint, require_room_for_checkpoints
from liverctl.runs.folder import (
    CONFIG_FILE,
    RunLock,
    check_fresh,
    checkpoint_path,
    discard_unstarted,
    find_resume_run,
    run_dir_for,
    run_store,
)
from liverctl.train import distributed


@dataclass(frozen=True)
class TrainRequest:
    """What `liverctl train` was asked: a preset to start or a run to resume, and the overrides."""

    preset: str | None = None
    sets: tuple[str, ...] = ()  # --set section.key=value texts, in order
    values: Mapping[str, Any] = field(default_factory=dict)  # typed overrides applied after them (--store, --epochs)
    name: str | None = None
    runs_dir: Path = Path("runs")
    resume: str | None = None
    folds: str | None = None  # an experiment over these folds (liverctl.experiment.train)
    device: str = "auto"
    time_limit_s: float | None = None
    show_progress: bool = True

    @property
    def has_overrides(self) -> bool:
        return bool(self.sets) or bool(self.values)

    def config(self) -> dict:
        """The preset's config with this request's overrides."""
        if not self.preset:
            raise LiverctlError("give --preset NAME (see `liverctl presets`) or --resume RUN")
        return resolve_config(self.preset, self.sets, self.values)


# What a run's checkpoint holds the shape of: changed on --resume, its weights or optimiser state cannot load
# (a RuntimeError), or load into the wrong thing (AdamW's state into SGD ended the next step in a KeyError,
# after config.toml had been rewritten with the change, so every later resume failed the same way).
FIXED_ON_RESUME = ("model.arch", "model.encoder", "model.encoder_depth", "model.decoder_channels", "data.context",
                   "optim.name")


def preflight(cfg: dict, device: str = "auto", *, weights: bool = True) -> None:
    """The checks that need no training set-up: the device is there, the store opens, the fold exists and
    fills a batch, weights can be had (`weights`: a resumed run takes them from its checkpoint), and the loss
    can be built (the names the config gives are `liverctl.config.validate`'s). Each of these failed only once the
    run folder had been made (which then kept the name taken), or on --resume once the run's log had been told it
    failed. The store and its fold come first: neither needs torch, which the others import (seconds: a
    wrong --set data.fold=N was refused only after them)."""
    import math

    from liverctl.data.dataset import split_rows
    from liverctl.data.store import LiverStore

    store = LiverStore.open(cfg["data"]["store"])
    train_rows, _ = split_rows(store, cfg["data"]["fold"], cfg["data"]["max_val_cases"])  # both sides have cases

    from liverctl.device import resolve_device
    from liverctl.train.losses import build_loss
    from liverctl.train.models import check_weights_available, read_encoder_weights
    from liverctl.train.session import steps_per_epoch

    info = distributed.from_env()
    resolve_device(device, info.local_rank)
    steps_per_epoch(cfg["train"], math.ceil(len(train_rows) / info.world))
    m = cfg["model"]
    if weights and not is_none(m["encoder_weights_path"]):
        read_encoder_weights(Path(m["encoder_weights_path"]))  # missing or unreadable: before the folder
    elif weights and not is_none(m["encoder_weights"]):
        check_weights_available(m["encoder"], m["encoder_weights"])
    _check_batch_fits_memory(cfg)
    build_loss(cfg)  # the names the config gives were checked with it (liverctl.config.validate)


def _check_batch_fits_memory(cfg: dict) -> None:
    """A batch of train.batch_size slices at data.input_size, as the model takes it (float32 image and mask),
    must fit this machine's memory: data.input_size=100000 was taken, announced as a run, and its first
    batch ended in a shared-memory traceback from a loader worker. One image channel is counted: a channel
    count the model cannot take is `check_model`'s to name."""
    from liverctl.data.nifti import machine_memory
    from liverctl.disk import human_bytes

    size, batch = int(cfg["data"]["input_size"]), int(cfg["train"]["batch_size"])
    need, memory = batch * 2 * size * size * 4, machine_memory()
    if need > memory:
        raise LiverctlError(
            f"a batch of {batch} slices at data.input_size {size} takes at least {human_bytes(need)} as float32, more than "
            f"this machine's {human_bytes(memory)} of memory; lower data.input_size or train.batch_size"
        )


def check_model(cfg: dict) -> int:
    """The model `cfg` asks for, built without weights and tried once in training mode before anything is
    written: a batch of `data.input_size` slices must give logits of that size (PSPNet at encoder_depth 5
    gives a quarter of it, PAN cannot take 64 px), and a batch of one must pass where train.batch_size is 1
    (DeepLabV3's pooled BatchNorm cannot); a refusal names the smallest data.input_size that would do, where one
    does. The one check of what input each smp architecture takes: it tries the model rather than keeping a
    table per architecture, for new runs, experiments and resumed runs alike. Returns the bytes one of its
    checkpoints takes (`checkpoint_bytes`).

    Built and run on the meta device (no memory, no compute: milliseconds), or on the CPU for a model that
    cannot be built or run there (Segformer's encoders read values while they are built).
    """
    import torch

    from liverctl.config import in_channels
    from liverctl.runs.checkpoint import checkpoint_bytes
    from liverctl.train.models import build_model
    from liverctl.train.session import build_optimizer, build_scheduler

    m, size = cfg["model"], int(cfg["data"]["input_size"])
    batch = min(int(cfg["train"]["batch_size"]), 2)  # 1 or 2 tells the same as 16
    name = f"model {m['arch']} / {m['encoder']}"
    try:
        with torch.device("meta"):
            model = build_model(cfg, pretrained=False)
            shape = _logits_shape(model, cfg, batch, size)
    except Exception:  # the CPU says what is wrong, if anything is (the meta device may refuse what it can do)
        try:
            model = build_model(cfg, pretrained=False)
        except (RuntimeError, MemoryError) as exc:  # e.g. a data.context of millions: terabytes of first conv
            detail = first_line(exc, 200) or type(exc).__name__
            raise LiverctlError(
                f"{name} cannot be built for {in_channels(cfg)} input channels (data.context="
                f"{cfg['data']['context']}) and model.decoder_channels={m['decoder_channels']}: {detail}"
            ) from None
        try:
            shape = _logits_shape(model, cfg, batch, size)
        except (RuntimeError, ValueError) as exc:
            detail = first_line(exc, 200)
            larger = _smallest_input_size(cfg, batch, size)
            hint = f"; it takes data.input_size {larger} and more" if larger else ""
            raise LiverctlError(
                f"{name} cannot train on {'a batch of 1' if batch == 1 else 'batches'} of {size}x{size} slices "
                f"(train.batch_size, data.input_size){hint}: {detail}"
            ) from None
    if tuple(shape) != (batch, 1, size, size):
        raise LiverctlError(
            f"{name} with model.encoder_depth={m['encoder_depth']} gives {shape[-2]}x{shape[-1]} logits for a "
            f"{size}x{size} input (data.input_size); liverctl needs logits of the input's size: change "
            f"model.encoder_depth (PSPNet: 3) or model.arch"
        )
    optimizer = build_optimizer(cfg, model.parameters())
    build_scheduler(cfg, optimizer, 1)  # optim.scheduler names one
    return checkpoint_bytes(model, optimizer)


def _smallest_input_size(cfg: dict, batch: int, size: int, largest: int = 512) -> int | None:
    """The smallest data.input_size above `size` (a multiple of 32, up to `largest`) at which the model gives
    logits of the input's size, tried on the meta device (PAN pools its deepest features to nothing below 128
    px); None where none does or the model cannot be tried there."""
    import torch

    from liverctl.train.models import build_model

    try:
        with torch.device("meta"):
            model = build_model(cfg, pretrained=False)
            for larger in range(size + 32, largest + 1, 32):
                try:
                    if _logits_shape(model, cfg, batch, larger) == (batch, 1, larger, larger):
                        return larger
                except (RuntimeError, ValueError):
                    continue
    except Exception:  # not buildable on the meta device (Segformer): no hint
        return None
    return None


def _logits_shape(model, cfg: dict, batch: int, size: int) -> tuple[int, ...]:
    """The logits' shape for a batch in training mode (BatchNorm checks its batch there); the model is a
    throwaway, so its running statistics may move."""
    import torch

    from liverctl.config import in_channels

    device = next(model.parameters()).device
    model.train()
    with torch.no_grad():
        return tuple(model(torch.zeros(batch, in_channels(cfg), size, size, device=device)).shape)


def train_run(request: TrainRequest, *, on_start: Callable[[Path, dict], None] = lambda run_dir, cfg: None) -> dict:
    """Start or resume the run `request` names and train it (`liverctl.train.loop.run_training`).

    `on_start(run_dir, cfg)` is called on rank 0 once the run's set-up succeeded, before its first step. Returns
    run_training's result plus `is_main` (whether this process is rank 0, the one that reports).
    """
    from liverctl.train import loop

    info = distributed.from_env()
    started_over = None  # check_fresh's note: an earlier run of this name that never saved a checkpoint was removed
    with contextlib.ExitStack() as held:
        if request.resume:
            run_dir = find_resume_run(request.runs_dir, request.resume)
            if info.is_main:  # held until the run ends; a second writer is refused here, at once
                held.enter_context(RunLock(run_dir))
            cfg = resumed_config(request, run_dir)
            if cfg["data"]["store"] == read_config(run_dir / CONFIG_FILE)["data"]["store"]:  # not given anew
                # from another folder a relative data.store is found where the run recorded it (and recorded so)
                cfg["data"]["store"] = str(run_store(cfg["data"]["store"], run_dir))
            preflight(cfg, request.device, weights=False)
            check_model(cfg)  # data.input_size or train.batch_size may change on resume
            # read and checked before the run is announced: a damaged last.pt is the command's one line
            resume_state = load_checkpoint(checkpoint_path(run_dir, "last"), resume=True)
        else:
            cfg, resume_state = request.config(), None
            run_dir = run_dir_for(request.runs_dir, request.name, request.preset)
            preflight(cfg, request.device)  # before a run folder exists: bad input leaves nothing behind
            if info.is_main:
                require_room_for_checkpoints(run_dir, check_model(cfg))
            if info.enabled and not request.name:
                raise LiverctlError("under torchrun give --name so that every rank writes to the same run folder")
            if info.is_main:  # other ranks of a torchrun job write into the folder rank 0 made
                held.enter_context(RunLock(run_dir))
                started_over = check_fresh(run_dir)
        try:
            result = loop.run_training(cfg, run_dir, resume=bool(request.resume), resume_state=resume_state,
                                       notes=(started_over,) if started_over else (),
                                       device=request.device, time_limit_s=request.time_limit_s,
                                       show_progress=request.show_progress,
                                       on_start=(lambda: on_start(run_dir, cfg)) if info.is_main else None)
        except BaseException:
            if not request.resume and info.is_main:  # a start that failed does not keep the name taken
                discard_unstarted(run_dir)
            raise
    return {**result, "is_main": info.is_main}


def resumed_config(request: TrainRequest, run_dir: Path) -> dict:
    """The run's saved config with the request's overrides; refused for another preset or a finished run."""
    from liverctl.runs.checkpoint import read_sidecar

    exp = experiment_of_fold(run_dir)
    if exp is not None:  # trained on its own, a fold no longer matches its out-of-fold predictions and decision
        raise LiverctlError(
            f"--resume {request.resume}: that run is {run_dir.name} of the experiment {exp.name}; continue the "
            f"experiment with `liverctl train --resume {exp}`"
        )
    cfg = read_config(run_dir / CONFIG_FILE)
    if request.preset and request.preset != cfg.get("preset"):
        raise LiverctlError(
            f"--resume {request.resume}: that run was made by preset {quoted(cfg.get('preset'))}, not {quoted(request.preset)}"
        )
    if request.name and request.name != run_dir.name:
        raise LiverctlError(f"--resume {request.resume} continues the run {quoted(run_dir.name)}; --name cannot rename it")
    if request.has_overrides:
        saved, cfg = cfg, apply_overrides(cfg, request.sets, request.values)
        for key in FIXED_ON_RESUME:
            section, name = key.split(".")
            if cfg[section][name] != saved[section][name]:
                raise LiverctlError(
                    f"--resume {request.resume}: {key} cannot change on resume (the checkpoint was trained with "
                    f"{quoted(saved[section][name])}, not {quoted(cfg[section][name])}); start a new run for that"
                )
    done = (read_sidecar(run_dir, "last") or {}).get("epoch")
    done = done if isinstance(done, int) and not isinstance(done, bool) else 0  # the .pt is checked on load
    if done >= cfg["train"]["epochs"]:
        raise LiverctlError(
            f"--resume {request.resume}: the run already completed its {plural(done, 'epoch')}; "
            f"continue it with --epochs N (N > {done})"
        )
    return cfg
