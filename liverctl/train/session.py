"""Everything a run needs before its first step: device, data, model, optimiser, resumed state."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.device import Precision, resolve_device, resolve_precision
from liverctl.errors import LiverctlError
from liverctl.plural import agree, plural
from liverctl.printable import first_line, quoted
from liverctl.runs.checkpoint import check_optimizer_state_fits, check_weights_fit, rng_from_plain
from liverctl.runs.validation_cases import CASES_KEY, case_split, check_same_split
from liverctl.train import distributed


def versions() -> dict[str, str]:
    """Python's version and the libraries' a run records (run_start, checkpoints): a library already imported
    gives its own `__version__`, any other its installed metadata. Importing them to ask cost every trainer
    process (each torchrun rank) about a second for albumentations alone, which only the CPU path's workers use."""
    import platform
    import sys
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("liverctl", "torch", "segmentation_models_pytorch", "timm", "albumentations", "zarr", "numpy"):
        version = getattr(sys.modules.get(name), "__version__", None)
        if version is None:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        out[name] = str(version)
    return out


@dataclass
class Session:
    """The live state of a run (what the loop reads and the checkpoint saves)."""

    cfg: dict
    info: distributed.DistInfo
    device: Any
    precision: Precision
    model: Any  # DDP-wrapped under torchrun
    raw_model: Any
    loss_fn: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    train_set: Any
    sampler: Any
    train_loader: Any
    val_loader: Any
    case_ids_by_code: list[str]  # every case id of the store, in code order: a validation batch's case codes index it
    val_cases: int
    steps_per_epoch: int
    case_split: dict = field(default_factory=dict)  # {training, validation: [case ids]}: what the checkpoint records
    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0
    global_step: int = 0
    # (sum, count) of the finite training losses of the epoch the checkpoint was saved in, up to step_in_epoch:
    # an epoch resumed midway reports its train_loss over all its steps, not only those after the resume
    epoch_losses: tuple[float, int] = (0.0, 0)
    best: dict = field(default_factory=lambda: {"epoch": None, "volume_dice": None})
    metrics: dict = field(default_factory=dict)
    guard_state: dict = field(default_factory=dict)
    good_epoch: int = 0

    def validate(self, keep_going: Callable[[int, int], bool] | None = None) -> dict | None:
        """The validation's metrics; None when `keep_going` abandoned it (`liverctl.train.validation`)."""
        from liverctl.train.validation import validate

        # the unwrapped model: a DDP forward broadcasts buffers, a collective that ranks with fewer
        # validation cases would never join
        return validate(
            self.raw_model, self.val_loader, loss_fn=self.loss_fn, case_ids_by_code=self.case_ids_by_code,
            precision=self.precision, device=self.device, info=self.info, threshold=self.cfg["infer"]["threshold"],
            keep_going=keep_going,
        )


def step_session(cfg: dict, device, precision: Precision, model, loss_fn, optimizer, scaler) -> Session:
    """A Session holding only what `liverctl.train.step.guarded_step` reads, with no data and no run: the
    trainer's own step timed outside a run (`liverctl bench`, scripts/gpu_check.py)."""
    return Session(
        cfg=cfg, info=distributed.DistInfo(), device=device, precision=precision, model=model, raw_model=model,
        loss_fn=loss_fn, optimizer=optimizer, scheduler=None, scaler=scaler, train_set=None, sampler=None,
        train_loader=None, val_loader=None, case_ids_by_code=[], val_cases=0, steps_per_epoch=0,
    )


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(cfg: dict, params):
    import torch

    o = cfg["optim"]
    if o["name"] == "adamw":
        return torch.optim.AdamW(params, lr=o["lr"], weight_decay=o["weight_decay"])
    if o["name"] == "adam":
        return torch.optim.Adam(params, lr=o["lr"])
    if o["name"] == "sgd":
        return torch.optim.SGD(params, lr=o["lr"], momentum=0.9, weight_decay=o["weight_decay"], nesterov=True)
    raise LiverctlError(f"optim.name: unknown optimiser {quoted(o['name'])}; valid: adamw, adam, sgd")


def build_scheduler(cfg: dict, optimizer, total_steps: int):
    """Per-step LambdaLR: linear warm-up, then cosine down to min_lr (or constant)."""
    import torch

    o = cfg["optim"]
    warmup, floor = int(o["warmup_steps"]), o["min_lr"] / o["lr"]
    if o["scheduler"] not in ("cosine", "constant"):
        raise LiverctlError(f"optim.scheduler: unknown {quoted(o['scheduler'])}; valid: cosine, constant")
    cosine = o["scheduler"] == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def setup_session(
    cfg: dict,
    info: distributed.DistInfo,
    *,
    device_name: str = "auto",
    resume_state: dict | None = None,
    note: Callable[[str], Any] = lambda message: None,
    resume_path: Any = None,
) -> Session:
    """Device, precision, process group, seeds, data, model, optimiser; `resume_state` (a checkpoint read
    from `resume_path`) restored on top. `note` receives remarks worth an event (the loader plan's)."""
    import torch

    from liverctl.train.losses import build_loss
    from liverctl.train.models import build_model

    device = resolve_device(device_name, info.local_rank)
    precision = resolve_precision(cfg["train"]["amp"], device)
    distributed.init(info, device.type)
    seed_everything(cfg["train"]["seed"] + info.rank)
    data = _data(cfg, info, device, note)
    if resume_state is not None:
        check_same_split(resume_state.get(CASES_KEY), data["case_split"], cfg["data"]["store"], resume_path)
    raw_model = build_model(cfg, pretrained=False if resume_state else None).to(device)
    model = raw_model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(cfg, raw_model.parameters())
    s = Session(
        cfg=cfg, info=info, device=device, precision=precision, model=model, raw_model=raw_model,
        loss_fn=build_loss(cfg).to(device), optimizer=optimizer,
        scheduler=build_scheduler(cfg, optimizer, data["steps_per_epoch"] * cfg["train"]["epochs"]),
        scaler=torch.amp.GradScaler(device.type, enabled=precision.needs_scaler), **data,
    )
    if resume_state is not None:
        check_weights_fit(resume_state["model"], raw_model.state_dict(), resume_path)
        if isinstance(resume_state.get("optimizer"), dict):
            check_optimizer_state_fits(resume_state["optimizer"], optimizer, resume_path)
        try:
            _restore(s, resume_state)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            detail = first_line(exc, 200)
            raise LiverctlError(
                f"the checkpoint does not fit this run's model, optimiser or RNG ({type(exc).__name__}: {detail})",
                path=resume_path,
            ) from None
    return s


def _data(cfg: dict, info: distributed.DistInfo, device, note: Callable[[str], Any]) -> dict:
    """The Session's data fields: training set, sampler and loader of this rank, validation loader and cases."""
    from liverctl.data import dataset as ds
    from liverctl.data import loaders
    from liverctl.data.augment_device import resolve_augment_on
    from liverctl.data.store import LiverStore

    tc, dc = cfg["train"], cfg["data"]
    store = LiverStore.open(dc["store"])
    if dc["normalize"] == "window" and (remark := not_in_hu_note(store)):
        note(remark)
    train_rows, val_rows = ds.split_rows(store, dc["fold"], dc["max_val_cases"])
    train_set = ds.SliceDataset(
        store, train_rows, cfg, train=True, augment_on=resolve_augment_on(cfg, device), device=device
    )
    val_set = ds.ValidationDataset(store, val_rows, cfg)
    steps = steps_per_epoch(tc, math.ceil(len(train_set) / info.world))
    sampler = ds.EpochSampler(
        train_set.liver, dc["liver_oversample"], tc["seed"], rank=info.rank, world=info.world,
        num_samples=steps * tc["batch_size"],
    )
    plan = loaders.plan_loader(dc["num_workers"], train_set.batch_bytes(tc["batch_size"]), device.type == "cuda")
    if plan.note:
        note(plan.note)
    split = case_split(store, train_rows, val_rows)
    if len(split["validation"]) == 1 and dc["max_val_cases"] != 1:
        note(one_validation_case_note(dc["fold"], split["validation"][0], len(val_rows)))
    return {
        "train_set": train_set, "sampler": sampler,
        "train_loader": loaders.make_train_loader(train_set, sampler, tc["batch_size"], plan),
        "val_loader": loaders.make_val_loader(val_set, tc["batch_size"], plan, info.rank, info.world),
        "case_ids_by_code": list(val_set.case_ids), "val_cases": len(set(val_set.case_codes.tolist())),
        "steps_per_epoch": steps, "case_split": split,
    }


def one_validation_case_note(fold: int, case_id: str, slices: int) -> str:
    """A fold that holds one case out (a store of few cases): its three Dice figures look like a model's
    agreement (volume and global Dice are the same figure with one case) and the best epoch rests on it alone."""
    return (f"fold {fold} validates on one case, {quoted(case_id)} ({plural(slices, 'slice')}): its volume and "
            "global Dice are one figure, and the best epoch is chosen on that case alone; fewer folds "
            "(`liverctl ingest DATA --folds N`) hold more cases out per fold")


def not_in_hu_note(store) -> str | None:
    """A remark when training cases' stored statistics do not look like CT in Hounsfield units
    (`conversion.intensity_note`, which ingest said of each), for a run that windows them as HU."""
    from liverctl.data.conversion import intensity_note

    cases = store.case_ids("train")
    odd = [c for c in cases if intensity_note(store.meta(c).get("stats"), Path(c), store.meta(c).get("scaling"))]
    if not odd:
        return None
    shown = ", ".join(odd[:3]) + (", ..." if len(odd) > 3 else "")
    return (f"{len(odd)} of the store's {plural(len(cases), 'training case')} ({shown}) {agree(len(odd), 'does', 'do')} "
            "not look like CT in Hounsfield units (see the notes `liverctl ingest` gave), yet data.normalize = "
            "\"window\" takes them as HU: ingest them again in HU, or set data.normalize = \"minmax\"")


def steps_per_epoch(tc: dict, per_rank: int) -> int:
    """Whole batches of this rank's share of the slices, capped by train.steps_per_epoch (which also
    stands alone when the share is smaller than one batch)."""
    steps = per_rank // tc["batch_size"]
    if tc["steps_per_epoch"] > 0:
        steps = min(steps, tc["steps_per_epoch"]) if steps else tc["steps_per_epoch"]
    if steps == 0:
        raise LiverctlError(
            f"train.batch_size {tc['batch_size']} is larger than the {per_rank} training slices per process; "
            "lower it or set train.steps_per_epoch"
        )
    return steps


def _epoch_losses(saved: Any) -> tuple[float, int]:
    """A checkpoint's `epoch_losses` {sum, count} as (sum, count); (0.0, 0) for one without them (an older
    checkpoint) or with values no run writes (a checkpoint is untrusted input)."""
    if not isinstance(saved, dict):
        return 0.0, 0
    total, count = saved.get("sum"), saved.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        return 0.0, 0
    if isinstance(total, bool) or not isinstance(total, (int, float)) or not math.isfinite(total):
        return 0.0, 0
    return float(total), count


def _restore(s: Session, state: dict) -> None:
    """Model, optimiser, scheduler, scaler, counters and RNG from a checkpoint (layout checked on load)."""
    import torch

    s.raw_model.load_state_dict(state["model"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        s.scaler.load_state_dict(state["scaler"])
    s.epoch, s.step_in_epoch, s.global_step = state["epoch"], state.get("step_in_epoch", 0), state["global_step"]
    s.epoch_losses = _epoch_losses(state.get("epoch_losses"))
    s.best = dict(state.get("best") or s.best)
    s.metrics = dict(state.get("metrics") or {})
    s.guard_state = dict(state.get("guard") or {})
    s.good_epoch = s.epoch
    rng = state.get("rng") or {}
    if s.info.rank == 0 and rng:
        python_state, numpy_state = rng_from_plain(rng)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            # one state per GPU visible where it was saved (Kaggle's T4 x2: two); torch indexes this machine's
            # GPUs by them, so more states than GPUs here would refuse the checkpoint (IndexError)
            torch.cuda.set_rng_state_all(rng["cuda"][: torch.cuda.device_count()])
