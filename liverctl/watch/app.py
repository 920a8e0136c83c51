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
from liverctl.watch.state import RunWatcher
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

    # ---- layout --------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield NanBanner(id="nan-banner")
        yield RunHeader(id="header")
        with Horizontal(id="charts"):
            yield BlockChart("train loss / step", id="loss-chart")
            yield BlockChart("volume Dice / epoch", id="volume-chart")
            with Vertical(id="side-charts"):
                yield BlockChart("slice Dice / epoch", id="slice-chart")
                yield BlockChart("global Dice / epoch", id="global-chart")
        yield EpochTable(id="epochs")
        yield InfoPanel(id="info")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_from_log()
        self.set_interval(self.poll_seconds, self.refresh_from_log)

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
        self.query_one(RunHeader).show_state(state, self.read_error or self.watcher.notice)
        banner = self.query_one(NanBanner)
        banner.display = len(state.nans) > self.nan_dismissed
        if banner.display:
            banner.show_state(state)
        self.query_one("#loss-chart", BlockChart).show(state.loss_points())
        self.query_one("#volume-chart", BlockChart).show(state.dice_points("volume_dice"))
        self.query_one("#slice-chart", BlockChart).show(state.dice_points("slice_dice"))
        self.query_one("#global-chart", BlockChart).show(state.dice_points("global_dice"))
        self.query_one(EpochTable).show_state(state)
        self.query_one(InfoPanel).show_state(state)
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
