"""The `liverctl watch` Textual app: a live view of one run's `events.jsonl`, nothing more.

It reads only the event file (through `RunWatcher`), polling it on a timer; all it knows about a run is
in `liverctl.watch.state`. A long log's first read, and its read again when it is replaced or truncated,
runs in a worker thread (`RunWatcher.read_log`): the screen, the keys and the NaN banner do not wait for
it. Never import torch, zarr or the trainer from here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import ContentSwitcher, Footer
from textual.worker import get_current_worker

from liverctl.watch.charts import ChartSettings, all_charts
from liverctl.watch.locate import list_runs, resolve_target, run_labels
from liverctl.watch.state import RunState
from liverctl.watch.watcher import LogRead, RunWatcher
from liverctl.watch.widgets import (
    Chart,
    CompareRunsPicker,
    CompareTable,
    EpochTable,
    InfoPanel,
    NanBanner,
    RunHeader,
    RunPicker,
)

DEFAULT_POLL_S = 0.3
# Charts are rebuilt from every step of the log (smoothing needs them all): on a long log that grows fast a
# rebuild on every poll would leave the app no time for keys. After a rebuild that took t seconds the next
# waits CHART_BUSY_FACTOR * t (so charts take at most about 1/CHART_BUSY_FACTOR of the time); the header,
# banner and tables still follow every poll, and new settings or other runs redraw at once.
CHART_BUSY_FACTOR = 10.0
_monotonic = time.perf_counter  # the rebuild's own cost is measured on this (tests replace it)


# Terminal sizes: below NARROW_BELOW columns the learning-rate and throughput charts take turns with the
# table (t); below SIDE_BY_SIDE_FROM they sit one above the other beside the table when there are STACK_ROWS
# rows for that (else they take turns too); from SIDE_BY_SIDE_FROM columns they sit side by side.
NARROW_BELOW = 120
SIDE_BY_SIDE_FROM = 170
STACK_ROWS = 44


class LogReadDone(Message):
    """From the worker thread: part of a long log read (`read`), or why it could not be read (`error`)."""

    def __init__(self, watcher: RunWatcher, read: LogRead | None, error: str | None = None):
        super().__init__()
        self.watcher, self.read, self.error = watcher, read, error


class WatchApp(App):
    """Header, NaN banner, loss / Dice / learning-rate / throughput charts, epochs or runs table, checkpoints.

    One run is followed (`watcher`: header, banner, epochs table); `compare` holds more run folders whose
    curves are overlaid on the same charts (any runs now, an experiment's folds once they exist). The
    chart settings (`settings`) belong to the app, so switching or adding runs keeps them.
    """

    CSS_PATH = "watch.tcss"
    TITLE = "liverctl watch"
    ENABLE_COMMAND_PALETTE = False  # its footer entry would crowd out the keys at 80 columns
    BINDINGS = [
        Binding("s", "smoothing", "Smooth"),
        Binding("x", "x_axis", "Step/time"),
        Binding("c", "pick_compare", "Overlay"),
        Binding("t", "next_view", "Table"),
        Binding("d", "dismiss_nan", "Dismiss"),
        Binding("r", "pick_run", "Runs"),
        Binding("left_square_bracket", "switch_run(-1)", "Prev run", key_display="[", show=False),
        Binding("right_square_bracket", "switch_run(1)", "Next run", key_display="]", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        run_dir: Path,
        runs_root: Path,
        *,
        compare: list[Path] | None = None,
        poll_seconds: float = DEFAULT_POLL_S,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__()
        self.runs_root = runs_root
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.watcher = RunWatcher(run_dir, clock=clock)
        self.compare = [RunWatcher(p, clock=clock) for p in compare or [] if Path(p) != Path(run_dir)]
        self.settings = ChartSettings()
        self.view = "runs" if self.compare else "epochs"  # what the table area shows (t cycles)
        # (state, NaN records it held) when the banner was last dismissed: a dismissal holds for that state
        # only, so a log replaced under us (a fresh state) or another run shows its NaN at once.
        self.nan_dismissed: tuple[RunState | None, int] = (None, 0)
        self.read_error: str | None = None
        self._shown: tuple | None = None  # what the tables show: redraw only when it changes
        self._charted: tuple | None = None  # what the charts show (see CHART_BUSY_FACTOR)
        self._charts_due = 0.0  # `_monotonic()` time before which new events do not rebuild the charts

    # ---- layout --------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # Kept as attributes: the timer updates them directly, also while a picker is on top and
        # while the app shuts down (a DOM query could then find nothing).
        self.banner = NanBanner(id="nan-banner")
        self.header = RunHeader(id="header")
        self.charts = {name: Chart(id=f"{name}-chart") for name in ("loss", "dice", "lr", "throughput")}
        self.table = EpochTable(id="epochs")
        self.compare_table = CompareTable(id="compare")
        self.info = InfoPanel(id="info")
        yield self.banner
        yield self.header
        with Horizontal(id="top-row"):
            yield self.charts["loss"]
            yield self.charts["dice"]
        with Horizontal(id="bottom-row"):
            with ContentSwitcher(initial=self.view, id="tables"):
                yield self.table
                yield self.compare_table
            with Horizontal(id="rate-charts"):
                yield self.charts["lr"]
                yield self.charts["throughput"]
        yield self.info
        yield Footer()

    def on_mount(self) -> None:
        self._fit_size(self.size.width, self.size.height)
        self.refresh_from_log()
        self._timer = self.set_interval(self.poll_seconds, self.refresh_from_log)

    def on_unmount(self) -> None:
        self._timer.stop()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_size(event.size.width, event.size.height)

    def _fit_size(self, width: int, height: int) -> None:
        """Small terminals show the learning-rate and throughput charts instead of the table (t)."""
        narrow = width < NARROW_BELOW or (width < SIDE_BY_SIDE_FROM and height < STACK_ROWS)
        self.screen.set_class(narrow, "-narrow")
        self.screen.set_class(not narrow and width < SIDE_BY_SIDE_FROM, "-medium")
        if not narrow and self.view == "rates":
            self.view = "epochs"
        self._show_view()

    def _show_view(self) -> None:
        self.screen.set_class(self.view == "rates", "-rates")
        if self.view in ("epochs", "runs"):
            self.query_one("#tables", ContentSwitcher).current = "compare" if self.view == "runs" else "epochs"

    # ---- updating ------------------------------------------------------------------------------------

    @property
    def watchers(self) -> list[RunWatcher]:
        """The followed run first, then the overlaid ones."""
        return [self.watcher, *self.compare]

    @property
    def states(self) -> list[RunState]:
        return [w.state for w in self.watchers]

    def refresh_from_log(self) -> None:
        """Read what the trainers appended and redraw (also redraws time-dependent parts: stalled, ETA)."""
        try:
            for watcher in self.watchers:
                if watcher.reading:
                    continue  # the worker reading its log hands the state over (on_log_read_done)
                if watcher.read_is_long():
                    watcher.start_reading()
                    self.run_worker(lambda w=watcher: self._read_log(w), thread=True, group="read-log")
                else:
                    watcher.poll()
            self.read_error = None
        except OSError as exc:  # e.g. permissions changed under us: say so and keep the last state
            self.read_error = _read_error(exc, self.watcher.path)
        self.show_state()

    def _read_log(self, watcher: RunWatcher) -> None:
        """In a worker thread: read a long log, posting its outline and then all of it to the app."""
        worker = get_current_worker()
        try:
            for read in watcher.read_log(stop=lambda: worker.is_cancelled):  # cancelled when the app quits
                self.post_message(LogReadDone(watcher, read))
        except OSError as exc:
            self.post_message(LogReadDone(watcher, None, _read_error(exc, watcher.path)))

    def on_log_read_done(self, message: LogReadDone) -> None:
        watcher = message.watcher
        if message.read is None:
            watcher.reading = False  # the next poll tries again
            self.read_error = message.error
        else:
            dismissed_state, dismissed = self.nan_dismissed
            if dismissed_state is watcher.state:  # a banner dismissed over the outline stays dismissed
                self.nan_dismissed = (message.read.state, dismissed)
            watcher.adopt(message.read)
        self.show_state()

    def show_state(self) -> None:
        state = self.watcher.state
        overlay = None
        if self.compare:
            overlay = "overlaid: " + ", ".join(w.state.name or w.run_dir.name for w in self.compare) + "  (c: change)"
        self.header.show_state(state, self.read_error or self.watcher.notice, overlay)
        dismissed_state, dismissed = self.nan_dismissed
        self.banner.display = len(state.nans) > (dismissed if dismissed_state is state else 0)
        if self.banner.display:
            self.banner.show_state(state, compact=self.screen.has_class("-narrow"))
        # Charts change only with new events (a long log holds 100k steps) or new settings, tables only with
        # new events. The states themselves are kept, not their ids: a replaced log gives a new state whose id
        # could be reused.
        key = (
            tuple((w.state, w.state.version) for w in self.watchers),
            (self.settings.smoothing, self.settings.x_axis, self.settings.show_raw),
        )
        if self._shown != key[0]:  # the tables show no chart setting: a key (s, x) leaves them be
            self._shown = key[0]
            self.table.show_state(state)
            self.compare_table.show_states(self.states)
        if self._charted != key:
            # Only newer events wait: the same runs and settings already on the charts.
            same_view = self._charted is not None and self._charted[1] == key[1] and [
                s for s, _ in self._charted[0]] == [s for s, _ in key[0]]
            if not same_view or _monotonic() >= self._charts_due:
                started = _monotonic()
                for name, spec in all_charts(self.states, self.settings).items():
                    self.charts[name].show(spec)
                self._charted = key
                now = _monotonic()
                self._charts_due = now + CHART_BUSY_FACTOR * (now - started)
        self.info.show_state(state)
        self.sub_title = f"{state.name} — {state.shown_status}"

    # ---- actions -------------------------------------------------------------------------------------

    def action_smoothing(self) -> None:
        self.settings.next_smoothing()
        self.show_state()

    def action_x_axis(self) -> None:
        self.settings.next_x_axis()
        self.show_state()

    def action_next_view(self) -> None:
        views = ["epochs", "runs"] + (["rates"] if self.screen.has_class("-narrow") else [])
        self.view = views[(views.index(self.view) + 1) % len(views)] if self.view in views else views[0]
        self._show_view()

    def action_dismiss_nan(self) -> None:
        """Hide the banner until a new NaN record arrives."""
        self.nan_dismissed = (self.watcher.state, len(self.watcher.state.nans))
        self.show_state()

    def open_run(self, run_dir: Path) -> None:
        """Follow another run; the overlaid runs and the chart settings stay."""
        self.watcher = RunWatcher(run_dir, clock=self.clock)
        self.compare = [w for w in self.compare if w.run_dir != Path(run_dir)]
        self.refresh_from_log()

    def set_compare(self, run_dirs: list[Path]) -> None:
        """Overlay these runs (a list of run folders: any runs, or the folds of an experiment)."""
        kept = {w.run_dir: w for w in self.compare}
        self.compare = [kept.get(Path(p)) or RunWatcher(p, clock=self.clock) for p in run_dirs
                        if Path(p) != self.watcher.run_dir]
        self.view = "runs" if self.compare else ("epochs" if self.view == "runs" else self.view)
        self._show_view()
        self.refresh_from_log()

    def action_switch_run(self, offset: int) -> None:
        runs = list_runs(self.runs_root)
        if not runs:
            self.notify(f"no runs in {self.runs_root}", severity="warning")
            return
        current = self.watcher.run_dir
        index = runs.index(current) if current in runs else -1
        self.open_run(runs[(index + offset) % len(runs)])

    def action_pick_run(self) -> None:
        runs = run_labels(self.runs_root)
        if not runs:
            self.notify(f"no runs in {self.runs_root}", severity="warning")
            return

        def picked(run_dir: Path | None) -> None:
            if run_dir is not None:
                self.open_run(run_dir)

        self.push_screen(RunPicker(runs, self.watcher.run_dir), picked)

    def action_pick_compare(self) -> None:
        runs = run_labels(self.runs_root)
        if len(runs) < 2 and not self.compare:
            self.notify(f"no other runs in {self.runs_root} to overlay", severity="warning")
            return

        def picked(run_dirs: list[Path] | None) -> None:
            if run_dirs is not None:
                self.set_compare(run_dirs)

        self.push_screen(CompareRunsPicker(runs, self.watcher.run_dir, [w.run_dir for w in self.compare]), picked)


def _read_error(exc: OSError, path: Path) -> str:
    return f"cannot read {exc.filename or path}: {exc.strerror or exc}"


def make_watch_app(
    run_dir_or_runs_root: str | os.PathLike,
    *,
    runs_root: str | os.PathLike | None = None,
    compare: list[str | os.PathLike] | None = None,
    poll_seconds: float = DEFAULT_POLL_S,
    clock: Callable[[], float] = time.time,
) -> WatchApp:
    """The watch app over a run folder, or over the newest run of a runs folder.

    `runs_root` is the folder whose runs the switch keys move between (default: the run's parent, or the
    runs folder given). `compare`: run folders overlaid on the charts from the start (an experiment's
    folds, once they exist, are such a list). Raises `LiverctlError` when a path is not a folder.
    """
    run_dir, root = resolve_target(run_dir_or_runs_root)
    others = [resolve_target(p)[0] for p in compare or []]
    return WatchApp(
        run_dir,
        Path(runs_root) if runs_root is not None else root,
        compare=others,
        poll_seconds=poll_seconds,
        clock=clock,
    )
