"""The training loop: start, epochs of guarded steps, validation, checkpoints, end.

Reads top to bottom: `run_training` sets the session up (`liverctl.train.session`), then `_Loop` runs it:
`start` (config, run_start), `epochs` of `train_epoch` (each step through the NaN guard) and `end_epoch`
(validation on whole held-out cases, a `best` checkpoint when the volume Dice improved and is finite,
then `last`), `close` (run_end). Every decision is an event.
"""

from __future__ import annotations

import math
import random
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liverctl.config import write_config
from liverctl.data.loaders import end_workers
from liverctl.device import cuda_memory_fields, out_of_memory, precision_note
from liverctl.errors import LiverctlError, NaNAbort, own_line
from liverctl.printable import esc
from liverctl.runs.checkpoint import (
    METRIC_KEYS,
    checkpoint_bytes,
    checkpoint_path,
    checkpoints_held,
    load_checkpoint,
    non_finite_weights,
    require_room_for_checkpoints,
    rng_to_plain,
    save_checkpoint,
)
from liverctl.runs.events import EventWriter
from liverctl.runs.folder import CONFIG_FILE, tidy_run_dir
from liverctl.runs.validation_cases import CASES_KEY
from liverctl.train import distributed
from liverctl.train.budget import TimeBudget
from liverctl.train.nan_guard import ABORT, OK, ROLLBACK, GoodState, NaNGuard
from liverctl.train.progress import ConsoleProgress
from liverctl.train.session import Session, setup_session, versions
from liverctl.train.step import StepResult, guarded_step


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

    def uninstall(self, *, ignore_sigterm: bool = False) -> None:
        """Put back the handlers the run found; `ignore_sigterm`: SIGTERM ignored instead, for the rest of the
        process (a torchrun rank, `close`)."""
        for sig, prev in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if ignore_sigterm and sig == signal.SIGTERM else prev)


def run_training(
    cfg: dict,
    run_dir: str | Path,
    *,
    resume: bool = False,
    resume_state: dict | None = None,
    device: str = "auto",
    time_limit_s: float | None = None,
    show_progress: bool = True,
    on_start: Callable[[], None] | None = None,
    notes: tuple[str, ...] = (),
) -> dict:
    """Train one fold into `run_dir`. Returns {status, best, epochs_done, global_step, run_dir}.

    `resume`: continue from checkpoints/last.pt (`resume_state`: that checkpoint already loaded and checked).
    `on_start()`: called once the set-up succeeded, just before the run_start event (a set-up refused, a resume on
    a store with other folds say, starts nothing and calls nothing). `notes`: remarks for the user on how this
    start came about (a note event each, and a line on the console), after run_start.
    Raises NaNAbort after the guard's last rollback, LiverctlError for bad input; in both cases the
    event log ends with run_end.
    """
    info = distributed.from_env()
    run_dir = Path(run_dir)
    resume_path = checkpoint_path(run_dir, "last")
    if resume and resume_state is None:
        resume_state = load_checkpoint(resume_path, resume=True)
    if resume_state is not None:
        cfg = resume_state["config"] if cfg is None else cfg
    if info.is_main:
        tidy_run_dir(run_dir)  # a killed predecessor's temporary files and torn last event line
    started_at = time.time()
    loop = _Loop(run_dir=run_dir, info=info, budget=TimeBudget(time_limit_s),
                 events=EventWriter(run_dir, run_dir.name) if info.is_main else _NullEvents(),
                 progress=ConsoleProgress(enabled=show_progress and info.is_main), started_at=started_at)
    setup_notes: list[str] = []  # the data's remarks: written after run_start (they preceded it, and the run's line)
    try:
        loop.s = setup_session(cfg, info, device_name=device, resume_state=resume_state, note=setup_notes.append,
                               resume_path=resume_path)
        if on_start is not None:
            on_start()
        loop.start(resumed=resume_state is not None)
        for remark in (*setup_notes, *notes):
            loop.note(remark)
        loop.finish(loop.epochs())
    except BaseException as exc:
        failure = _out_of_memory(exc, loop.s.cfg if loop.s is not None else cfg)
        loop.status, loop.message = _ended_by(failure or exc)
        if loop.status == "failed" and info.enabled:
            # the failure of one rank is the others' broken collective: the log and the command's line
            # say which rank failed first, and how
            if not info.is_main:  # before close() ends the group; a killed rank's end is the cause, not this
                distributed.report_failure(info, run_dir, distributed.dead_rank(info) or loop.message)
            elif (first := distributed.earlier_failure(info, run_dir, since=started_at,
                                                       failed_at=time.time())) is not None:
                loop.message, where = first
                raise LiverctlError(f"{loop.message} ({where})") from exc
        if failure is not None:
            raise failure from None
        raise
    finally:
        loop.close()
    return loop.result()


def _out_of_memory(exc: BaseException, cfg: dict | None) -> LiverctlError | None:
    """A batch that does not fit the GPU (CUDA's out-of-memory error, a traceback before) as one line saying
    which settings to lower."""
    advice = "lower train.batch_size or data.input_size"
    if cfg is None:
        return out_of_memory(exc, "training", advice)
    tc, dc = cfg["train"], cfg["data"]
    if tc.get("amp") == "off":
        advice += ", or train.amp=auto (activations kept in 16 bits)"
    return out_of_memory(exc, f"training at train.batch_size {tc['batch_size']}, data.input_size {dc['input_size']}",
                         advice)


def _ended_by(exc: BaseException) -> tuple[str, str]:
    """run_end's status and message when `exc` ends the run."""
    if isinstance(exc, NaNAbort):
        return "nan_abort", str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "stopped at once by a second signal"
    if isinstance(exc, LiverctlError):
        return "failed", own_line(exc)
    if isinstance(exc, Exception):
        return "failed", f"{type(exc).__name__}: {own_line(exc)}"
    return "failed", ""


@dataclass
class _Loop:
    """One run from its start to its end: the session and what its epochs share (events, guard, budget)."""

    run_dir: Path
    info: distributed.DistInfo
    events: EventWriter | _NullEvents
    progress: ConsoleProgress
    budget: TimeBudget
    s: Session | None = None
    stop: _Stop = field(default_factory=_Stop)
    guard: NaNGuard = field(default_factory=NaNGuard)
    good: GoodState = field(default_factory=GoodState)  # what a rollback restores
    loss_sum: float = 0.0  # the finite training losses of the current epoch: their sum and count
    loss_count: int = 0
    window: tuple[float, int] = (0.0, 0)  # (since, samples) for the step events' samples_per_s
    # (since, samples, seconds once its steps end) of this epoch's steps: epoch_end's and the console's samples/s,
    # known also for an epoch of fewer steps than train.log_every, which writes no step event
    epoch_steps: tuple[float, int, float | None] = (0.0, 0, None)
    status: str = "failed"
    message: str = ""
    started: bool = False  # run_start was written: only then does run_end follow
    started_at: float = 0.0  # time.time() at this start: failures other ranks reported since then are this run's

    def note(self, message: str) -> None:
        """A remark for the user: a `note` event, and a line on the console (printed as written: `esc`)."""
        self.events.emit("note", message=message)
        self.progress.note(f"[yellow]note:[/] {esc(message)}")

    def start(self, *, resumed: bool) -> None:
        """The resolved config beside the run, run_start, signals, the guard as the checkpoint left it."""
        s, cfg = self.s, self.s.cfg
        if self.info.is_main:
            write_config(cfg, self.run_dir / CONFIG_FILE)
        self.events.emit(
            "run_start", epoch=s.epoch, step=s.global_step, config=cfg, preset=cfg.get("preset"),
            device=str(s.device), amp=s.precision.mode, versions=versions(),
            # where data.store is from here: a relative one is found again from another folder (runs.folder.run_store)
            store=str(Path(cfg["data"]["store"]).expanduser().absolute()),
            resumed_from=(
                {"epoch": s.epoch, "global_step": s.global_step, "step_in_epoch": s.step_in_epoch} if resumed else None
            ),
            world_size=self.info.world, distributed_backend=distributed.backend(self.info),
            train_slices=len(s.train_set), val_cases=s.val_cases, steps_per_epoch=s.steps_per_epoch,
        )
        self.started = True
        if (remark := precision_note(s.precision, s.device)) is not None:
            self.note(remark)
        if self.info.is_main:  # again here: a resume, a later fold, or a disk that filled since
            require_room_for_checkpoints(self.run_dir, checkpoint_bytes(s.raw_model, s.optimizer),
                                         held=checkpoints_held(self.run_dir))
        self.stop.install()
        self.guard = NaNGuard(cfg["train"]["nan_skip_limit"], cfg["train"]["nan_max_rollbacks"])
        self.guard.load_state_dict(s.guard_state)
        self.good.capture(model=s.raw_model, optimizer=s.optimizer, scaler=s.scaler)

    def epochs(self) -> str:
        """All remaining epochs; returns the run_end status."""
        s = self.s
        while s.epoch < s.cfg["train"]["epochs"]:
            if self.agreed(not self.budget.room_for_epoch()):
                self.save("last", "time_limit")
                return "time_limit"
            t_epoch = time.monotonic()
            stopped = self.train_epoch()
            if stopped is None:
                stopped = self.end_epoch(t_epoch)
            if stopped is not None:
                return stopped
            if self.agreed(self.stop.reason is not None):
                return "interrupted"
        return "completed"

    def agreed(self, flag: bool) -> bool:
        """`flag` OR-ed over all ranks. Every decision to end a DDP run is taken together: a rank whose
        budget (its own clock, no checkpoint to write) or signal (torchrun forwards it to each rank in turn)
        says otherwise would go on into the next epoch's collectives alone."""
        return distributed.any_across(self.info, [flag], self.s.device)[0]

    def train_epoch(self) -> str | None:
        """The guarded steps of one epoch; a status when a signal or the time limit stops it midway."""
        s, tc = self.s, self.s.cfg["train"]
        s.sampler.set_epoch(s.epoch, start=s.step_in_epoch * tc["batch_size"])
        self.progress.start_epoch(s.epoch, tc["epochs"], s.steps_per_epoch, s.step_in_epoch)
        inject = {int(x) for x in tc["inject_nan_at_steps"]}
        # an epoch resumed midway goes on with the losses of its steps before the stop (from last.pt)
        self.loss_sum, self.loss_count = s.epoch_losses if s.step_in_epoch else (0.0, 0)
        s.epoch_losses = (0.0, 0)
        self.window, last_step_s = (time.monotonic(), 0), 0.0
        self.epoch_steps = (self.window[0], 0, None)
        for batch in s.train_loader:
            t_step = time.monotonic()
            flags = [self.stop.reason is not None, not self.budget.room_for_step(last_step_s)]
            images, masks = s.train_set.finish(batch, s.device)  # cast, normalise (+ augment) on the device
            step = guarded_step(s, images, masks, self.guard, inject_nan=s.global_step in inject, flags=flags)
            self.count_step(step, images.shape[0])
            last_step_s = time.monotonic() - t_step
            self.report_step(step)
            want_stop, no_time = step.flags
            # one process stops right after the step a signal fell in, without asking the loader for a batch
            # that its workers, signalled with the whole group, may no longer serve (DDP ranks must agree
            # through the step's flags, so they take one step more)
            want_stop = want_stop or (s.info.world == 1 and self.stop.reason is not None)
            if want_stop or no_time:
                self.progress.close()
                self.save("last", "interrupt" if want_stop else "time_limit")
                return "interrupted" if want_stop else "time_limit"
        since, samples, _ = self.epoch_steps
        self.epoch_steps = (since, samples, time.monotonic() - since)  # the validation is no part of the rate
        return None

    def count_step(self, step: StepResult, batch_size: int) -> None:
        """The step's loss (when it counts), the scheduler, the step counters, the samples for the rate."""
        s = self.s
        if step.action == OK and math.isfinite(step.loss):
            self.loss_sum += step.loss
            self.loss_count += 1
        with warnings.catch_warnings():
            # the schedule advances with every step, also one the guard or the GradScaler skipped (in the
            # events already); torch would warn about the first of those as if the loop were wrong
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            s.scheduler.step()
        s.global_step += 1
        s.step_in_epoch += 1
        self.window = (self.window[0], self.window[1] + batch_size * s.info.world)
        since, samples, _ = self.epoch_steps
        self.epoch_steps = (since, samples + batch_size * s.info.world, None)

    def report_step(self, step: StepResult) -> None:
        """The guard's action on a non-finite step; a step event every train.log_every steps; progress."""
        s = self.s
        if step.action != OK:
            self.on_non_finite(step.action, step.where, step.loss, step.grad_norm)
        lr = s.optimizer.param_groups[0]["lr"]
        if s.global_step % s.cfg["train"]["log_every"] == 0 and step.where != "loss":  # a skipped step has its nan event
            since, samples = self.window
            self.events.emit(
                "step", epoch=s.epoch, step=s.global_step, loss=step.loss, lr=lr,
                samples_per_s=samples / max(time.monotonic() - since, 1e-9),
                grad_norm=step.grad_norm, **cuda_memory_fields(s.device),
            )
            self.window = (time.monotonic(), 0)
        self.progress.step(step.loss, self.epoch_rate(), lr)

    def epoch_rate(self) -> float | None:
        """Samples per second over this epoch's steps so far (all of them, once they have ended); None before any."""
        since, samples, seconds = self.epoch_steps
        seconds = time.monotonic() - since if seconds is None else seconds
        return samples / max(seconds, 1e-9) if samples else None

    def end_epoch(self, t_epoch: float) -> str | None:
        """Validation, the guard's verdict on it, the best and last checkpoints, epoch_end; "time_limit" when
        the validation would not end before the limit (then the epoch's steps are saved and it is abandoned:
        `--resume` validates the epoch)."""
        s = self.s
        self.progress.status("validating")
        watch = self.budget.validation_watch()

        def keep_going(done: int, total: int) -> bool:
            self.end_if_another_rank_failed()
            self.progress.validating(done, total)
            return watch(done, total)

        metrics = s.validate(keep_going)
        if metrics is None:
            self.progress.close()
            self.note(f"the time limit leaves no room to finish the validation of epoch {s.epoch + 1}: its steps "
                      "are saved, and --resume validates it")
            self.save("last", "time_limit")
            return "time_limit"
        # None: no finite step this epoch (a nan event says so)
        metrics["train_loss"] = self.loss_sum / self.loss_count if self.loss_count else None
        finite = all(math.isfinite(metrics[k]) for k in ("val_loss", "volume_dice", "slice_dice", "global_dice"))
        finite = finite and not non_finite_weights(s.raw_model.state_dict())  # never save NaN weights
        s.epoch += 1
        s.step_in_epoch = 0
        is_best = finite and (s.best["volume_dice"] is None or metrics["volume_dice"] > s.best["volume_dice"])
        if not finite:
            self.on_non_finite(self.guard.request_rollback(), "validation", metrics["val_loss"])
        if is_best:
            s.best = {"epoch": s.epoch, "volume_dice": metrics["volume_dice"]}
        s.metrics = metrics
        t_save = time.monotonic()
        if is_best:  # before last: a kill between the two then redoes this epoch on resume
            self.save("best", "best")
        if finite:
            self.save("last", "last")
            self.good.capture(model=s.raw_model, optimizer=s.optimizer, scaler=s.scaler)
            s.good_epoch = s.epoch
        seconds = time.monotonic() - t_epoch
        self.budget.epoch_done(seconds, time.monotonic() - t_save)
        epochs = s.cfg["train"]["epochs"]
        rate = self.epoch_rate()
        self.events.emit("epoch_end", epoch=s.epoch, step=s.global_step, **metrics, seconds=seconds, is_best=is_best,
                         epochs=epochs, **({"samples_per_s": rate} if rate is not None else {}))
        self.progress.end_epoch(s.epoch - 1, epochs, metrics, seconds=seconds, is_best=is_best)
        return None

    def end_if_another_rank_failed(self) -> None:
        """Rank 0, between the batches of a validation (each rank validates its own cases, with no collective
        until the end), fails now when another rank has reported its failure (`distributed.report_failure`):
        torchrun SIGKILLs the ranks left 30 s after one has failed, which a long validation outlasted, ending
        rank 0 without run_end."""
        if self.info.is_main and self.info.world > 1:
            first = distributed.earlier_failure(self.info, self.run_dir, since=self.started_at, failed_at=time.time(),
                                                wait_s=0)
            if first is not None:
                raise LiverctlError(first[0])  # run_training reports it as that rank's failure

    def on_non_finite(self, action: str, where: str, loss: float, grad_norm: float | None = None) -> None:
        """Event for a skipped step; restore the last good state for a rollback; NaNAbort for an abort."""
        s = self.s
        detail = f"non-finite {where} at step {s.global_step}"  # as the event counts it (from 1), beside it in `watch`
        if action == ROLLBACK:
            self.good.restore(model=s.raw_model, optimizer=s.optimizer, scaler=s.scaler)
            factor = s.cfg["train"]["nan_lr_factor"]
            s.scheduler.base_lrs = [lr * factor for lr in s.scheduler.base_lrs]
            for group, lr in zip(s.optimizer.param_groups, s.scheduler.get_last_lr(), strict=True):
                group["lr"] = lr * factor
            detail += f"; rolled back to the last good checkpoint (end of epoch {s.good_epoch}), lr x{factor}"
        elif action == ABORT:
            detail += f"; {self.guard.rollbacks - 1} rollbacks did not help, stopping"
        self.events.emit("nan", epoch=s.epoch, step=s.global_step, where=where, action=action,
                         counts=self.guard.counts(), loss=loss, grad_norm=grad_norm, message=detail)
        self.progress.note(f"[yellow]NaN guard:[/] {detail}")
        if action == ABORT:
            raise NaNAbort(f"training diverged: {detail}; the best checkpoint (if any) is untouched")

    def save(self, which: str, label: str) -> None:
        """Rank 0 writes `<which>.pt` (+ .json) and a checkpoint event."""
        import torch

        s = self.s
        s.guard_state = self.guard.state_dict()
        if not self.info.is_main:
            return
        state = {
            "run": self.run_dir.name,
            "preset": s.cfg.get("preset"),
            "config": s.cfg,
            "epoch": s.epoch,
            "step_in_epoch": s.step_in_epoch,
            "global_step": s.global_step,
            "epoch_losses": ({"sum": self.loss_sum, "count": self.loss_count} if s.step_in_epoch
                             else {"sum": 0.0, "count": 0}),
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
            "metrics": {k: s.metrics.get(k) for k in METRIC_KEYS},
            "best": s.best,
            CASES_KEY: s.case_split,  # what report / submit auto may score it on later
            "versions": versions(),
            "saved_at": time.time(),
        }
        path = save_checkpoint(self.run_dir, which, state)
        self.events.emit("checkpoint", epoch=s.epoch, step=s.global_step, path=str(path), which=label,
                         volume_dice=s.metrics.get("volume_dice"))

    def finish(self, status: str) -> None:
        """The status of a run whose epochs ended without an exception (a completed run needs a best)."""
        self.status = status
        if status == "completed" and self.s.best["epoch"] is None:
            raise NaNAbort(
                f"training ended without a finite checkpoint: the validation of every epoch ({self.s.epoch}) was "
                "non-finite, so no best.pt was written; the training diverged (try a lower optim.lr)"
            )
        # under DDP the signal may have reached another rank only (its stop flag is OR-ed over the ranks)
        self.message = {"interrupted": f"stopped by {self.stop.reason or 'a signal to another rank'}",
                        "time_limit": "stopped before the time limit"}.get(status, "")

    def close(self) -> None:
        """run_end (whatever ended a run that started), then everything the run held is let go. A set-up that
        failed writes nothing: a resumed run's log keeps the end it had (interrupted, say), not a failure of a
        start that never happened (the error was the command's one line)."""
        import torch

        s = self.s
        # A torchrun rank runs one run and then only prints its line and exits; torchrun SIGTERMs the ranks
        # left once one has exited non-zero (SIGKILL 30 s later), and a default SIGTERM here ended rank 0
        # before its error line (the log named the failure, stderr had nothing from rank 0)
        self.stop.uninstall(ignore_sigterm=self.info.launched)
        self.progress.close()
        if self.started:
            self.events.emit("run_end", epoch=s.epoch, step=s.global_step, status=self.status, best=s.best,
                             message=self.message)
        self.events.close()
        if s is not None:
            end_workers(s.train_loader, s.val_loader)
        distributed.shutdown(self.info)
        torch.set_grad_enabled(True)

    def result(self) -> dict:
        s = self.s
        return {"status": self.status, "best": s.best, "epochs_done": s.epoch, "global_step": s.global_step,
                "run_dir": str(self.run_dir)}
