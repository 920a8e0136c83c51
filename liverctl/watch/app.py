"""The `liverctl watch` Textual app: a live view of one run's `events.jsonl`, nothing more.

It reads only the event file (through `RunWatcher`), polling it on a timer; all it knows about a run is
in `liverctl.watch.state`. Never import torch, zarr or the trainer from here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer

from liverctl.watch.locate import list_runs, resolve_target, run_labels
from liverctl.watch.state import RunState, RunWatcher
from liverctl.watch.widgets import BlockChart, EpochTable, InfoPanel, NanBanner, RunHeader, RunPicker

DEFAULT_POLL_S = 0.3


class WatchApp(App):
    """Header, NaN banner, loss and Dice charts, the epochs table and the checkpoints of one run."""

    CSS_PATH = "watch.tcss"
    TITLE = "liverctl watch"
    BINDINGS = [
        Binding("d", "dismiss_nan", "Dismiss NaN"),
        Binding("r", "pick_run", "Runs"),
        Binding("left_square_bracket", "switch_run(-1)", "Prev run", key_display="["),
        Binding("right_square_bracket", "switch_run(1)", "Next run", key_display="]"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        run_dir: Path,
        runs_root: Path,
        *,
        poll_seconds: float = DEFAULT_POLL_S,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__()
        self.runs_root = runs_root
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.watcher = RunWatcher(run_dir, clock=clock)
        self.nan_dismissed = 0  # NaN records already seen when the banner was last dismissed
        self.read_error: str | None = None
        self._shown: tuple[RunState, int] | None = None  # (state, version) the charts and table show

    # ---- layout --------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # Kept as attributes: the timer updates them directly, also while the run picker is on top and
        # while the app shuts down (a DOM query could then find nothing).
        self.banner = NanBanner(id="nan-banner")
        self.header = RunHeader(id="header")
        self.charts = {
            "loss": BlockChart("train loss / step", id="loss-chart"),
            "volume_dice": BlockChart("volume Dice / epoch", id="volume-chart"),
            "slice_dice": BlockChart("slice Dice / epoch", id="slice-chart"),
            "global_dice": BlockChart("global Dice / epoch", id="global-chart"),
        }
        self.table = EpochTable(id="epochs")
        self.info = InfoPanel(id="info")
        yield self.banner
        yield self.header
        with Horizontal(id="charts"):
            yield self.charts["loss"]
            yield self.charts["volume_dice"]
            with Vertical(id="side-charts"):
                yield self.charts["slice_dice"]
                yield self.charts["global_dice"]
        yield self.table
        yield self.info
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_from_log()
        self._timer = self.set_interval(self.poll_seconds, self.refresh_from_log)

    def on_unmount(self) -> None:
        self._timer.stop()

    # ---- updating ------------------------------------------------------------------------------------

    def refresh_from_log(self) -> None:
        """Read what the trainer appended and redraw (also redraws time-dependent parts: stalled, ETA)."""
        try:
            self.watcher.poll()
            self.read_error = None
        except OSError as exc:  # e.g. permissions changed under us: say so and keep the last state
            self.read_error = f"cannot read {self.watcher.path}: {exc.strerror or exc}"
        self.show_state()

    def show_state(self) -> None:
        state = self.watcher.state
        self.header.show_state(state, self.read_error or self.watcher.notice)
        self.banner.display = len(state.nans) > self.nan_dismissed
        if self.banner.display:
            self.banner.show_state(state)
        # Charts and table change only with new events (a long log holds 100k steps). The state itself is
        # kept, not its id: a replaced log gives a new state whose id could be the old one's.
        if self._shown is None or self._shown[0] is not state or self._shown[1] != state.version:
            self._shown = (state, state.version)
            self.charts["loss"].show(state.loss_points())
            for metric in ("volume_dice", "slice_dice", "global_dice"):
                self.charts[metric].show(state.dice_points(metric))
            self.table.show_state(state)
        self.info.show_state(state)
        self.sub_title = f"{state.name} — {state.status}"

    # ---- actions -------------------------------------------------------------------------------------

    def action_dismiss_nan(self) -> None:
        """Hide the banner until a new NaN record arrives."""
        self.nan_dismissed = len(self.watcher.state.nans)
        self.show_state()

    def open_run(self, run_dir: Path) -> None:
        self.watcher = RunWatcher(run_dir, clock=self.clock)
        self.nan_dismissed = 0
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


def make_watch_app(
    run_dir_or_runs_root: str | os.PathLike,
    *,
    runs_root: str | os.PathLike | None = None,
    poll_seconds: float = DEFAULT_POLL_S,
    clock: Callable[[], float] = time.time,
) -> WatchApp:
    """The watch app over a run folder, or over the newest run of a runs folder.

    `runs_root` is the folder whose runs the switch keys move between (default: the run's parent, or the
    runs folder given). Raises `LiverctlError` when the path is not a folder.
    """
    run_dir, root = resolve_target(run_dir_or_runs_root)
    return WatchApp(
        run_dir, Path(runs_root) if runs_root is not None else root, poll_seconds=poll_seconds, clock=clock
    )
