"""The widgets of `liverctl watch`: each shows one part of a `RunState` and holds no logic of its own."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, OptionList, Static
from textual.widgets.option_list import Option

from liverctl.watch import summary
from liverctl.watch.state import RunState

BLOCKS = " ▁▂▃▄▅▆▇█"


def bin_points(points: list[float | None], width: int) -> list[float | None]:
    """Squeeze points into at most `width` columns: mean of each bin, None if any point in it is None."""
    if width <= 0 or not points:
        return []
    if len(points) <= width:
        return list(points)
    out: list[float | None] = []
    for i in range(width):
        chunk = points[i * len(points) // width : (i + 1) * len(points) // width]
        finite = [v for v in chunk if v is not None]
        out.append(None if len(finite) < len(chunk) or not finite else sum(finite) / len(finite))
    return out


def chart_lines(points: list[float | None], width: int, height: int) -> list[Text]:
    """A bar chart `height` rows high in eighth-blocks; a non-finite point is a red column of `×`.

    With fewer points than columns each point gets a bar up to 3 columns wide, left-aligned.
    """
    cols = bin_points(points, width)
    if not cols or height <= 0:
        return [Text("") for _ in range(max(height, 0))]
    bar = max(1, min(3, width // len(cols)))
    finite = [v for v in cols if v is not None]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = high - low
    levels = []
    for v in cols:
        if v is None:
            levels.append(None)
        else:  # the lowest value still gets a sliver, so a flat series is visible
            levels.append(height * 8 if span == 0 else 1 + round((v - low) / span * (height * 8 - 1)))
    lines = []
    for row in range(height):
        floor = (height - 1 - row) * 8  # eighths below this row
        line = Text()
        for level in levels:
            if level is None:
                line.append("×" * bar, style="bold red")
            else:
                line.append(BLOCKS[max(0, min(8, level - floor))] * bar, style="cyan")
        lines.append(line)
    return lines


class BlockChart(Widget):
    """A titled bar chart of a series that may hold non-finite points (None), drawn to the widget's size."""

    DEFAULT_CSS = "BlockChart { height: 7; }"

    def __init__(self, title: str, *, digits: int = 4, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.border_title = title
        self.digits = digits
        self.points: list[float | None] = []

    def show(self, points: list[float | None]) -> None:
        self.points = points
        self.refresh()

    @property
    def n_nan(self) -> int:
        return sum(v is None for v in self.points)

    def caption(self) -> Text:
        """One line over the bars: NaN count first (it must not be cropped away), then last/min/max."""
        text = Text()
        if self.n_nan:
            text.append(f" {self.n_nan} NaN ", style="bold white on red")
            text.append(" ")
        finite = [v for v in self.points if v is not None]
        if finite:
            fmt = summary.fmt_number
            text.append("last ", style="dim")
            text.append(fmt(finite[-1], self.digits), style="bold")
            text.append(f"  min {fmt(min(finite), self.digits)}  max {fmt(max(finite), self.digits)}", style="dim")
        text.append(f"{'  ' if finite or self.n_nan else ''}n={len(self.points)}", style="dim")
        return text

    def render(self) -> Text:
        width, height = self.content_size.width, self.content_size.height
        caption = self.caption()
        caption.truncate(width, overflow="ellipsis")
        lines = [caption]
        if not self.points:
            lines.append(Text("no data yet", style="dim"))
        else:
            lines += chart_lines(self.points, width, max(1, height - 1))
        return Text("\n").join(lines)


class NanBanner(Static):
    """The red NaN banner at the top; the app shows it on the first NaN and hides it when dismissed."""

    def show_state(self, state: RunState) -> None:
        self.update(Text(summary.nan_banner_text(state, dismiss_hint=True), style="bold"))


class RunHeader(Static):
    def show_state(self, state: RunState, notice: str | None) -> None:
        self.update(summary.header_text(state, notice))


class InfoPanel(Static):
    def show_state(self, state: RunState) -> None:
        self.update(summary.info_text(state))


class EpochTable(DataTable):
    """One row per finished epoch, then the unfinished one (dim); rebuilt whenever the app sees new events.

    Tens of rows, not thousands: rebuilding is cheaper than tracking edits.
    """

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_columns(*summary.EPOCH_HEADERS)

    def show_state(self, state: RunState) -> None:
        rows = state.rows
        self.clear()
        for row in rows:
            self.add_row(*summary.epoch_cells(state, row), key=str(row.epoch))
        current = summary.current_epoch_cells(state)
        if current is not None:
            self.add_row(*current, key="current")
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)


class RunPicker(ModalScreen[Path | None]):
    """Choose another run from the runs folder (newest first)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, runs: list[tuple[Path, str]], current: Path):
        super().__init__()
        self.runs = runs
        self.current = current

    def compose(self) -> ComposeResult:
        options = [
            Option(("▶ " if path == self.current else "  ") + label, id=str(i))
            for i, (path, label) in enumerate(self.runs)
        ]
        picker = OptionList(*options, id="run-picker")
        picker.border_title = "runs, newest first (enter: open, esc: cancel)"
        yield picker

    def on_mount(self) -> None:
        picker = self.query_one(OptionList)
        current = [i for i, (path, _) in enumerate(self.runs) if path == self.current]
        picker.highlighted = current[0] if current else 0
        picker.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.runs[int(event.option.id)][0])

    def action_cancel(self) -> None:
        self.dismiss(None)
