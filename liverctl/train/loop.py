"""The training loop: start, epochs of guarded steps, validation, checkpoints, end.

Reads top to bottom: `run_training` sets everything up (`_setup`), then runs epochs; each step goes
through the NaN guard; each epoch ends with validation on whole held-out cases and a `last`
checkpoint (`best` when the volume Dice improved and is finite). Every decision is an event.
"""

from __future__ import annotations

import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liverctl.config import write_config
from liverctl.device import cuda_memory_fields
from liverctl.errors import LiverctlError, NaNAbort
from liverctl.runs.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    non_finite_weights,
    rng_to_plain,
    save_checkpoint,
)
from liverctl.runs.events import EventWriter
from liverctl.runs.folder import CONFIG_FILE, tidy_run_dir
from liverctl.train import distributed
from liverctl.train.budget import TimeBudget
from liverctl.train.nan_guard import ABORT, OK, ROLLBACK, GoodState, NaNGuard
from liverctl.train.progress import ConsoleProgress
from liverctl.train.session import Session, setup_session, versions
from liverctl.train.step import guarded_step


class _NullEvents:
    """What ranks other than 0 write: nothing."""

    def emit(self, *a, **k) -> dict:
        return {}

    def close(self) -> None:
        pass


@dataclass
class _Stop:
    """Stop requests from signals (set in the handler, acted on between steps)."""

    reason: str | None = None
    _previous: dict = field(default_factory=dict)

    def install(self) -> None:
        def handler(signum, _frame):
            if self.reason is not None:  # second signal: stop now
                raise KeyboardInterrupt
            self.reason = signal.Signals(signum).name

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass

    def uninstall(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)


def run_training(
    cfg: dict,
    run_dir: str | Path,
    *,
    resume: bool = False,
    device: str = "auto",
    time_limit_s: float | None = None,
    show_progress: bool = True,
) -> dict:
    """Train one fold into `run_dir`. Returns {status, best, epochs_done, global_step, run_dir}.

    Raises NaNAbort after the guard's last rollback, LiverctlError for bad input; in both cases the
    event log ends with run_end.
    """
    import torch

    info = distributed.from_env()
    run_dir = Path(run_dir)
    run_name = run_dir.name
    resume_path = checkpoint_path(run_dir, "last")
    resume_state = load_checkpoint(resume_path, resume=True) if resume else None
    if resume_state is not None:
        cfg = resume_state["config"] if cfg is None else cfg
    if info.is_main:
        tidy_run_dir(run_dir)  # a killed predecessor's temporary files and torn last event line
    events = EventWriter(run_dir, run_name) if info.is_main else _NullEvents()
    progress = ConsoleProgress(enabled=show_progress and info.is_main)
    stop = _Stop()
    budget = TimeBudget(time_limit_s)
    status, message = "failed", ""
    s: Session | None = None
    try:
        s = setup_session(
            cfg, info, device, resume_state, note=lambda m: events.emit("note", message=m), resume_path=resume_path
        )
        if info.is_main:
            write_config(cfg, run_dir / CONFIG_FILE)
        events.emit(
            "run_start",
            epoch=s.epoch,
            step=s.global_step,
            config=cfg,
            preset=cfg.get("preset"),
            device=str(s.device),
            amp=s.precision.mode,
            versions=versions(),
            resumed_from=(
                {"epoch": s.epoch, "global_step": s.global_step, "step_in_epoch": s.step_in_epoch}
                if resume_state
                else None
            ),
            world_size=info.world,
            distributed_backend=distributed.backend(info),
            train_slices=len(s.train_set),
            val_cases=s.val_cases,
            steps_per_epoch=s.steps_per_epoch,
        )
        stop.install()
        status = _epochs(s, cfg, run_dir, events, progress, stop, budget)
        if status == "completed" and s.best["epoch"] is None:
            raise NaNAbort(
                f"training ended without a finite checkpoint: the validation of every epoch ({s.epoch}) was "
                "non-finite, so no best.pt was written; the training diverged (try a lower optim.lr)"
            )
        message = {"interrupted": f"stopped by {stop.reason}", "time_limit": "stopped before the time limit"}.get(
            status, ""
        )
    except NaNAbort as exc:
        status, message = "nan_abort", str(exc)
        raise
    except KeyboardInterrupt:
        status, message = "interrupted", "stopped at once by a second signal"
        raise
    except LiverctlError as exc:
        status, message = "failed", str(exc)
        raise
    except Exception as exc:
        status, message = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        stop.uninstall()
        progress.close()
        best = s.best if s is not None else {"epoch": None, "volume_dice": None}
        events.emit(
            "run_end",
            epoch=s.epoch if s else None,
            step=s.global_step if s else None,
            status=status,
            best=best,
            message=message,
        )
        events.close()
        distributed.shutdown(info)
        torch.set_grad_enabled(True)
    return {
        "status": status,
        "best": s.best,
        "epochs_done": s.epoch,
        "global_step": s.global_step,
        "run_dir": str(run_dir),
    }


def _epochs(s: Session, cfg, run_dir, events, progress, stop, budget) -> str:
    """All remaining epochs; returns the run_end status."""

    tc = cfg["train"]
    guard = NaNGuard(tc["nan_skip_limit"], tc["nan_max_rollbacks"])
    guard.load_state_dict(s.guard_state)
    good = GoodState()
    good.capture(model=s.raw_model, optimizer=s.optimizer, scaler=s.scaler)
    inject = set(int(x) for x in tc["inject_nan_at_steps"])
    epochs = tc["epochs"]
    while s.epoch < epochs:
        if not budget.room_for_epoch():
            s.guard_state = guard.state_dict()
            _save(s, cfg, run_dir, events, "last", "time_limit")
            return "time_limit"
        t_epoch = time.monotonic()
        s.sampler.set_epoch(s.epoch, start=s.step_in_epoch * tc["batch_size"])
        progress.start_epoch(s.epoch, epochs, s.steps_per_epoch, s.step_in_epoch)
        losses: list[float] = []
        window_t, window_n, last_step_s = time.monotonic(), 0, 0.0
        for batch in s.train_loader:
            t_step = time.monotonic()
            flags = [stop.reason is not None, not budget.room_for_step(last_step_s)]
            images, masks = s.train_set.finish(batch, s.device)  # cast, normalise (+ augment) on the device
            step = guarded_step(s, images, masks, guard, inject_nan=s.global_step in inject, flags=flags)
            want_stop, no_time = step.flags
            loss_value, grad_norm = step.loss, step.grad_norm
            if step.action == OK and math.isfinite(loss_value):
                losses.append(loss_value)
            s.scheduler.step()
            s.global_step += 1
            s.step_in_epoch += 1
            window_n += images.shape[0] * s.info.world
            last_step_s = time.monotonic() - t_step
            if step.action != OK:
                _on_non_finite(s, guard, good, step.action, step.where, loss_value, grad_norm, events, progress)
            lr = s.optimizer.param_groups[0]["lr"]
            if s.global_step % tc["log_every"] == 0 and step.where != "loss":  # a skipped step has its nan event
                rate = window_n / max(time.monotonic() - window_t, 1e-9)
                events.emit(
                    "step", epoch=s.epoch, step=s.global_step, loss=loss_value, lr=lr, samples_per_s=rate, grad_norm=grad_norm,
                    **cuda_memory_fields(s.device),
                )
                window_t, window_n = time.monotonic(), 0
                s.last_rate = rate
            progress.step(loss_value, s.last_rate, lr)
            if want_stop or no_time:
                progress.close()
                s.guard_state = guard.state_dict()
                _save(s, cfg, run_dir, events, "last", "interrupt" if want_stop else "time_limit")
                return "interrupted" if want_stop else "time_limit"
        progress.status("validating")
        metrics = s.validate()
        metrics["train_loss"] = float(np.mean(losses)) if losses else None  # no finite step this epoch
        finite = all(math.isfinite(metrics[k]) for k in ("val_loss", "volume_dice", "slice_dice", "global_dice"))
        finite = finite and not non_finite_weights(s.raw_model.state_dict())  # never save NaN weights
        s.epoch += 1
        s.step_in_epoch = 0
        is_best = finite and (s.best["volume_dice"] is None or metrics["volume_dice"] > s.best["volume_dice"])
        if not finite:
            action = guard.request_rollback()
            _on_non_finite(s, guard, good, action, "validation", metrics["val_loss"], None, events, progress)
        if is_best:
            s.best = {"epoch": s.epoch, "volume_dice": metrics["volume_dice"]}
        s.metrics = metrics
        s.guard_state = guard.state_dict()
        t_save = time.monotonic()
        if is_best:  # before last: a kill between the two then redoes this epoch on resume
            _save(s, cfg, run_dir, events, "best", "best")
        if finite:
            _save(s, cfg, run_dir, events, "last", "last")
            good.capture(model=s.raw_model, optimizer=s.optimizer, scaler=s.scaler)
            s.good_epoch = s.epoch
        seconds = time.monotonic() - t_epoch
        budget.epoch_done(seconds, time.monotonic() - t_save)
        events.emit("epoch_end", epoch=s.epoch, step=s.global_step, **metrics, seconds=seconds, is_best=is_best, epochs=epochs)
        progress.end_epoch(s.epoch - 1, epochs, metrics, seconds, is_best)
        if stop.reason is not None:
            return "interrupted"
    return "completed"


def _on_non_finite(s: Session, guard, good, action, where, loss_value, grad_norm, events, progress) -> None:
    """Event for a skipped step; restore the last good state for a rollback; NaNAbort for an abort."""
    detail = f"non-finite {where} at step {s.global_step - (where != 'validation')}"
    if action == ROLLBACK:
        good.restore(model=s.raw_model, optimizer=s.optimizer, scaler=s.scaler)
        factor = s.cfg["train"]["nan_lr_factor"]
        s.scheduler.base_lrs = [lr * factor for lr in s.scheduler.base_lrs]
        for group, lr in zip(s.optimizer.param_groups, s.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr * factor
        detail += f"; rolled back to the last good checkpoint (end of epoch {s.good_epoch}), lr x{factor}"
    elif action == ABORT:
        detail += f"; {guard.rollbacks - 1} rollbacks did not help, stopping"
    events.emit(
        "nan",
        epoch=s.epoch,
        step=s.global_step,
        where=where,
        action=action,
        counts=guard.counts(),
        loss=loss_value,
        grad_norm=grad_norm,
        message=detail,
    )
    progress.note(f"[yellow]NaN guard:[/] {detail}")
    if action == ABORT:
        raise NaNAbort(f"training diverged: {detail}; the best checkpoint (if any) is untouched")


def _save(s: Session, cfg, run_dir, events, which: str, label: str) -> None:
    """Rank 0 writes `<which>.pt` (+ .json) and a checkpoint event."""
    import torch

    if s.info.is_main:
        state = {
            "run": Path(run_dir).name,
            "preset": cfg.get("preset"),
            "config": cfg,
            "epoch": s.epoch,
            "step_in_epoch": s.step_in_epoch,
            "global_step": s.global_step,
            "model": s.raw_model.state_dict(),
            "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(),
            "scaler": s.scaler.state_dict(),
            "rng": rng_to_plain({
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            }),
            "guard": s.guard_state,
            "metrics": {k: s.metrics.get(k) for k in ("train_loss", "val_loss", "volume_dice", "slice_dice", "global_dice")},
            "best": s.best,
            "versions": versions(),
            "saved_at": time.time(),
        }
        path = save_checkpoint(run_dir, which, state)
        events.emit(
            "checkpoint", epoch=s.epoch, step=s.global_step, path=str(path), which=label, volume_dice=s.metrics.get("volume_dice")
        )
