"""What `watch` shows, folded from a run's events: pure Python, no Textual, no torch.

`RunState.feed(events)` folds events (from `liverctl.runs.events`) into the run's name, preset, device,
per-step losses, per-epoch rows, NaN records, throughput, ETA and checkpoints; its status and best epoch
are those of the shared reducer it holds (`liverctl.runs.history.RunHistory`), plus a live-only stall hint.
`RunWatcher` (`liverctl/watch/watcher.py`) keeps one up to date from a run folder.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

from liverctl.printable import one_line
from liverctl.runs.events import KINDS, parse_lines
from liverctl.runs.history import RunHistory, as_int, dice, finite, run_status
from liverctl.watch.records import (
    NUMBER_FIELDS,
    Checkpoint,
    CurrentEpoch,
    EpochRow,
    NanRecord,
    StepSample,
    non_finite_paths,
)

# A run is "stalled" after this many typical epochs (or step gaps, before the first epoch) of silence.
STALL_FACTOR = 3.0
STALL_MIN_S = 120.0  # never call a run stalled sooner than this
STALL_FIRST_EPOCH_MIN_S = 300.0  # before the first epoch the gap also covers the first validation
STALL_NO_HISTORY_S = 600.0  # nothing to compare with yet (run_start only)


class RunState:
    """Everything the screen shows about one run, updated by `feed(events)`.

    `clock` (seconds since the epoch, like `time.time`) decides "stalled", the ETA and the elapsed time;
    tests inject a fake one.
    """

    def __init__(self, name: str = "", *, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.name = name
        self.preset: str | None = None
        self.device: str | None = None
        self.amp: str | None = None
        self.resumed_from: str | None = None
        self.config: dict[str, Any] = {}
        self.started_ts: float | None = None
        self.last_ts: float | None = None
        self.end: dict[str, Any] | None = None
        self.n_events = 0
        self.steps: list[tuple[int | None, float | None]] = []  # (step, loss or None when non-finite)
        self.step_ts: list[float] = []
        self.step_clock: list[tuple[int, float]] = []  # (step number, ts) of numbered step events
        self.samples_per_s: float | None = None
        self.lr: float | None = None
        self.samples: list[StepSample] = []  # every step event, for the charts
        self.gpu_mem_gb: float | None = None  # CUDA memory in use / peak, when the trainer reports it
        self.gpu_mem_peak_gb: float | None = None
        self.epochs: dict[int, EpochRow] = {}
        self.total_epochs: int | None = None
        self.nans: list[NanRecord] = []
        self.nan_steps: set[int] = set()
        self.checkpoints: list[Checkpoint] = []
        self.notes: list[tuple[float | None, str]] = []
        self.unknown_kinds: dict[str, int] = {}
        self.unreadable_lines = 0  # complete lines of the log that held no event (`feed_lines`)
        self.steps_per_epoch: int | None = None
        self._current = CurrentEpoch(number=1)
        self.history = RunHistory()  # the shared reducer: status and best epoch follow its rules
        self.writer_alive: bool | None = None  # whether the run's lock is held; None: not known (no folder)
        self.rank_failed = False  # a torchrun rank left its failure in the folder (runs.folder.rank_failures)
        self.version = 0  # bumped by every feed that changed something (views redraw on change)

    # ---- folding -------------------------------------------------------------------------------------

    def feed(self, events: Iterable[dict]) -> int:
        """Fold events in order; returns how many were taken."""
        n = 0
        for event in events:
            self._fold(event)
            n += 1
        if n:
            self.n_events += n
            self.version += 1
        return n

    def feed_lines(self, lines: Iterable[str]) -> int:
        """Fold a log's complete lines in order, counting those that hold no event (`unreadable_lines`, as
        `runs` counts them); returns how many events were taken."""
        events, unreadable = parse_lines(lines)
        if unreadable:
            self.unreadable_lines += unreadable
            self.version += 1
        return self.feed(events)

    def _fold(self, e: dict) -> None:
        kind = e.get("kind")
        ts = finite(e.get("ts"))
        if ts is not None:
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if isinstance(e.get("run"), str) and e["run"] and not self.name:
            self.name = e["run"]
        self.history.add(e)
        if kind != "nan":
            self._check_values(e, kind, ts)
        handler = getattr(self, f"_on_{kind}", None) if kind in KINDS else None
        if handler is None:
            key = str(kind)
            self.unknown_kinds[key] = self.unknown_kinds.get(key, 0) + 1
            return
        handler(e, ts)

    def _check_values(self, e: dict, kind: Any, ts: float | None) -> None:
        bad = [p for p in non_finite_paths(e) if p != "ts"]
        bad += [f for f in NUMBER_FIELDS.get(str(kind), ()) if f in e and e[f] is None]
        if not bad:
            return
        epoch, step = as_int(e.get("epoch")), as_int(e.get("step"))
        self._mark_point(epoch, step, bad, kind)
        if any(not r.from_value and (r.epoch, r.step) == (epoch, step) for r in self.nans):
            return  # the guard's own `nan` event (written first) already tells about this step
        self._add_nan(
            NanRecord(
                where=f"{kind}:{','.join(bad)}",
                action="report",
                epoch=epoch,
                step=step,
                ts=ts,
                message=f"non-finite value in {kind} event: {', '.join(bad)}",
                from_value=True,
            )
        )

    def _add_nan(self, record: NanRecord) -> None:
        record.epoch_ordinal = len(self.epochs) + 1
        self.nans.append(record)
        self._current.n_nan += 1

    def _mark_point(self, epoch: int | None, step: int | None, fields: list[str], kind: Any) -> None:
        """Show a non-finite value where it belongs: a step on the loss chart, a cell in the epochs table."""
        validation = kind == "epoch_end" or any(f.startswith("val") for f in fields)
        if step is not None and not validation:
            self.nan_steps.add(step)
        if epoch is not None and epoch in self.epochs and (kind == "epoch_end" or step is None):
            self.epochs[epoch].nan_fields.update(fields)  # e.g. the writer's report after its epoch_end

    def _on_run_start(self, e: dict, ts: float | None) -> None:
        self.started_ts = self.started_ts if self.started_ts is not None else ts
        # A resumed run is a new process: the last segment's rate and step times say nothing about this one.
        self.samples_per_s = None
        self.step_clock = []
        if self._current.started_ts is None:
            self._current.started_ts = ts
        self.end = None  # a resumed run is running again
        for attr in ("preset", "device", "amp"):
            if e.get(attr) is not None:
                setattr(self, attr, str(e[attr]))
        resumed = e.get("resumed_from")
        if isinstance(resumed, dict):  # the trainer writes {epoch, global_step, step_in_epoch}
            resumed = ", ".join(f"{k} {v}" for k, v in resumed.items() if k in ("epoch", "global_step"))
        self.resumed_from = str(resumed) if resumed else None
        if as_int(e.get("steps_per_epoch")):
            self.steps_per_epoch = e["steps_per_epoch"]
        if isinstance(e.get("config"), dict):
            self.config = e["config"]
            train = self.config.get("train")
            if isinstance(train, dict) and as_int(train.get("epochs")):
                self.total_epochs = train["epochs"]
            if self.preset is None and isinstance(self.config.get("preset"), str):
                self.preset = self.config["preset"]

    def _on_step(self, e: dict, ts: float | None) -> None:
        step = as_int(e.get("step"))
        loss = finite(e.get("loss"))
        if "loss" in e:
            self.steps.append((step, loss))
            if loss is not None:
                self._current.losses.append(loss)
        if ts is not None:
            self.step_ts.append(ts)
            if step is not None:
                self.step_clock.append((step, ts))
        if finite(e.get("samples_per_s")) is not None:
            self.samples_per_s = float(e["samples_per_s"])
        if finite(e.get("lr")) is not None:
            self.lr = float(e["lr"])
        for attr in ("gpu_mem_gb", "gpu_mem_peak_gb"):
            if finite(e.get(attr)) is not None:
                setattr(self, attr, float(e[attr]))
        self.samples.append(StepSample(step, ts, loss, finite(e.get("lr")), finite(e.get("samples_per_s"))))

    def _on_epoch_end(self, e: dict, ts: float | None) -> None:
        epoch = as_int(e.get("epoch"))
        if epoch is None:
            return
        row = EpochRow(
            epoch=epoch,
            train_loss=finite(e.get("train_loss")),
            val_loss=finite(e.get("val_loss")),
            volume_dice=dice(e.get("volume_dice")),
            slice_dice=dice(e.get("slice_dice")),
            global_dice=dice(e.get("global_dice")),
            seconds=finite(e.get("seconds")),
            ts=ts,
            # Only this event's own non-finite fields: an epoch written again after a rollback starts clean.
            nan_fields={f for f in NUMBER_FIELDS["epoch_end"] if f in e and finite(e[f]) is None},
            nan_seen=self._current.n_nan > 0,
            step=as_int(e.get("step")) if as_int(e.get("step")) is not None else self._last_step(),
        )
        self._current = CurrentEpoch(number=epoch + 1, started_ts=ts)
        self.epochs[epoch] = row  # a rolled-back epoch written again replaces the first one
        best = self.best  # the shared rule's best epoch (the history already holds this event)
        for other in self.epochs.values():
            other.is_best = best is not None and other.epoch == best[0]
        if as_int(e.get("epochs")):
            self.total_epochs = e["epochs"]
        if finite(e.get("samples_per_s")) is not None:  # the epoch's rate: known without a step event (few steps)
            self.samples_per_s = float(e["samples_per_s"])

    def _on_checkpoint(self, e: dict, ts: float | None) -> None:
        self.checkpoints.append(
            Checkpoint(
                which=str(e.get("which") or "?"),
                path=str(e.get("path") or ""),
                epoch=as_int(e.get("epoch")),
                volume_dice=dice(e.get("volume_dice")),
                ts=ts,
            )
        )

    def _on_nan(self, e: dict, ts: float | None) -> None:
        where, action = str(e.get("where") or "?"), str(e.get("action") or "?")
        epoch, step = as_int(e.get("epoch")), as_int(e.get("step"))
        counts = e.get("counts") if isinstance(e.get("counts"), dict) else {}
        record = NanRecord(where, action, epoch, step, ts, one_line(e.get("message")), counts)
        kind, _, fields = where.partition(":")
        names = set((fields or where).split(","))
        for i, old in enumerate(self.nans):
            if (old.epoch, old.step) != (epoch, step):
                continue
            # A value event holding a null, then the writer's `nan` report of it: one record, the report's.
            if old.from_value and (old.where == where or names & set(old.where.partition(":")[2].split(","))):
                record.epoch_ordinal = old.epoch_ordinal
                self.nans[i] = record
                return
            # The guard wrote its own `nan` event before the value event: the writer's report adds nothing.
            if action == "report" and not old.from_value and old.action != "report":
                return
        self._add_nan(record)
        self._mark_point(epoch, step, sorted(names), kind if fields else None)

    def _on_note(self, e: dict, ts: float | None) -> None:
        self.notes.append((ts, one_line(e.get("message"))))

    def _on_run_end(self, e: dict, ts: float | None) -> None:
        self.end = {
            "status": str(e.get("status") or "unknown"),
            "best": e.get("best") if isinstance(e.get("best"), dict) else None,
            "message": one_line(e.get("message")),  # anyone's text: one printable line, cut
            "ts": ts,
        }

    def _last_step(self) -> int | None:
        numbered = [s for s, _ in self.steps[-1:] if s is not None]
        return numbered[0] if numbered else None

    # ---- derived views -------------------------------------------------------------------------------

    @property
    def rows(self) -> list[EpochRow]:
        return [self.epochs[k] for k in sorted(self.epochs)]

    @property
    def status(self) -> str:
        """The run's status by the shared rule (`liverctl.runs.history.run_status`: the `run_end` status,
        else running while the run's lock is held, else interrupted); "waiting" before the first event
        while a writer may still come, and the shared rule's "unknown" (as `liverctl runs` says) once the log
        is there, empty, and nobody writes it (`ended_before_first_event`)."""
        if self.n_events == 0 and not self.ended_before_first_event:
            return "waiting"
        return run_status(self.history, self.writer_alive, self.rank_failed)

    @property
    def ended_before_first_event(self) -> bool:
        """The events file is there (the writer takes the run's lock before creating it) but holds no event,
        and no process holds the lock: the run died before its first event (e.g. a full disk)."""
        return self.n_events == 0 and self.writer_alive is False

    @property
    def stalled(self) -> bool:
        """A live-only hint: running, but silent for longer than `stall_after_s`."""
        return (self.status == "running" and self.last_ts is not None
                and self.clock() - self.last_ts > self.stall_after_s())

    @property
    def shown_status(self) -> str:
        """What the screen says: the status, or "stalled" for a running run that went silent."""
        return "stalled" if self.stalled else self.status

    def current_epoch(self) -> CurrentEpoch | None:
        """The unfinished epoch, when steps or NaN records were written after the last epoch_end."""
        current = self._current
        return current if current.losses or current.n_nan else None

    def stall_after_s(self) -> float:
        """Seconds of silence after which a running run counts as stalled."""
        seconds = [r.seconds for r in self.epochs.values() if r.seconds]
        if seconds:
            return max(STALL_MIN_S, STALL_FACTOR * statistics.median(seconds))
        gaps = [b - a for a, b in zip(self.step_ts, self.step_ts[1:], strict=False) if b > a]
        if gaps:
            return max(STALL_FIRST_EPOCH_MIN_S, STALL_FACTOR * statistics.median(gaps))
        return STALL_NO_HISTORY_S

    @property
    def silent_s(self) -> float | None:
        return None if self.last_ts is None else max(0.0, self.clock() - self.last_ts)

    @property
    def best(self) -> tuple[int, float] | None:
        """(epoch, volume Dice) of the best epoch, by the shared rule (`RunHistory.best`)."""
        best = self.history.best
        if best is None or as_int(best.get("epoch")) is None:
            return None
        return best["epoch"], dice(best["volume_dice"])

    @property
    def has_nan(self) -> bool:
        return bool(self.nans)

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "nan_abort")

    def median_epoch_s(self) -> float | None:
        seconds = [r.seconds for r in self.rows[-5:] if r.seconds]
        return statistics.median(seconds) if seconds else None

    def eta_s(self) -> float | None:
        """Seconds left: epochs left times the median recent epoch, less the current epoch's progress.

        Before the first epoch ends: steps left at the step rate seen so far (validation not counted).
        """
        if self.status != "running" or not self.total_epochs:
            return None
        per_epoch = self.median_epoch_s()
        if per_epoch is None:
            return self._eta_from_steps()
        left = max(0, self.total_epochs - len(self.epochs))
        # The current epoch began at the last epoch_end, or at the resume when the run was stopped since:
        # the hours between a kill and its resume are no progress.
        began = [t for t in (*(r.ts for r in self.epochs.values()), self.history.segment_start) if t is not None]
        in_epoch = 0.0 if not began or left == 0 else max(0.0, self.clock() - max(began))
        return max(0.0, left * per_epoch - min(in_epoch, per_epoch))

    def _eta_from_steps(self) -> float | None:
        if not self.steps_per_epoch or len(self.step_clock) < 2:
            return None
        (s0, t0), (s1, t1) = self.step_clock[0], self.step_clock[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        return max(0.0, (self.total_epochs * self.steps_per_epoch - s1) * (t1 - t0) / (s1 - s0))

    def step_in_epoch(self) -> int | None:
        """Steps done in the current epoch (from the latest step number and `steps_per_epoch`)."""
        # The last numbered step, found from the end (the header asks on every redraw; 100k steps in a long log).
        last = next((s for s, _ in reversed(self.steps) if s is not None), None)
        if not self.steps_per_epoch or last is None or self.end is not None:
            return None
        return min(self.steps_per_epoch, max(0, last - len(self.epochs) * self.steps_per_epoch))

    def elapsed_s(self) -> float | None:
        """Seconds the run has been training, summed over its segments as `liverctl runs` sums them
        (`RunHistory.wall_seconds`): a resumed run does not count the time it lay stopped. A running run's
        last segment runs on to now; a run nobody writes any more stopped at its last event."""
        if self.started_ts is None:
            return None
        return self.history.wall_seconds_at(self.clock() if self.status == "running" else None)

    def loss_points(self) -> list[float | None]:
        """Training loss per step event, None where a step was non-finite (for the charts)."""
        points: list[tuple[int | None, float | None]] = [
            (step, None if step is not None and step in self.nan_steps else loss) for step, loss in self.steps
        ]
        seen = {s for s, _ in self.steps}
        # A `nan` event at a step that wrote no step event still shows, as a point of its own.
        points += [(s, None) for s in sorted(self.nan_steps - seen)]
        if all(s is not None for s, _ in points):  # a step done again after a resume: its last value
            points = sorted(dict(points).items())  # (history.last_per's rule, on (step, loss) pairs)
        return [v for _, v in points]

    def dice_points(self, metric: str) -> list[float | None]:
        return [None if metric in r.nan_fields else getattr(r, metric) for r in self.rows]

    def nan_counts(self) -> dict[str, int]:
        """How many NaN records per guard action (skip_step, rollback, abort, report)."""
        counts: dict[str, int] = {}
        for rec in self.nans:
            counts[rec.action] = counts.get(rec.action, 0) + 1
        return counts

    def guard_counts(self) -> dict[str, Any]:
        """The guard's own running counters (skipped, rollbacks) from the latest `nan` event carrying them."""
        for rec in reversed(self.nans):
            if rec.counts:
                return rec.counts
        return {}
