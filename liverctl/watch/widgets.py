"""The widgets of `liverctl watch`: each shows one part of a `RunState` and holds no logic of its own."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import DataTable, OptionList, SelectionList, Static
from textual.widgets.option_list import Option
from textual_plotext import PlotextPlot

from liverctl.narrow import pack
from liverctl.watch import summary
from liverctl.watch.charts import ChartSpec, chart_text
from liverctl.watch.state import RunState


class Chart(PlotextPlot):
    """A plotext line chart of a `ChartSpec`, redrawn at the widget's size (the spec holds all the data)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.spec: ChartSpec | None = None

    def show(self, spec: ChartSpec) -> None:
        if spec == self.spec:  # e.g. the Dice chart after `s`: drawing it again would take a plotext build
            return
        self.spec = spec
        self.refresh()

    def render(self) -> RenderResult:
        if self.spec is None:
            return Text("")
        width, height = self.size.width, self.size.height
        self.plt.theme(self._get_plotext_theme_name(self.app.theme))
        text = chart_text(self.plt, self.spec, width, height)
        return Text.from_ansi(text, no_wrap=True, overflow="crop")  # a wrapped line would push the axis off


class NanBanner(Static):
    """The red NaN banner at the top; the app shows it on the first NaN and hides it when dismissed."""

    _shown: tuple | None = None  # the state shown, drawn again at the widget's new width on a resize

    def show_state(self, state: RunState, *, compact: bool = False) -> None:
        """`compact` (narrow terminals): at most three lines, the widget's width each (`nan_banner_lines`: what
        happened, at which step, the key that dismisses it kept; the rest cut first), so the charts keep
        their room. Before the first layout (width 0) the lines whole, cut by the CSS."""
        self._shown = (state,)
        width = self.content_size.width
        if compact and width > 0:
            text = "\n".join(summary.nan_banner_lines(state, width))
        else:
            text = summary.nan_banner_text(state, dismiss_hint=True)
        self.update(Text(text, style="bold", no_wrap=compact, overflow="ellipsis" if compact else "fold"))

    def on_resize(self, event) -> None:  # the screen's class follows its size (`WatchApp._fit_size`)
        if self._shown is not None:
            self.show_state(self._shown[0], compact=self.screen.has_class("-narrow"))


class RunHeader(Static):
    _shown: tuple | None = None  # show_state's arguments, drawn again at the widget's new width on a resize

    def show_state(self, state: RunState, notice: str | None, extra: str | None = None) -> None:
        """The header's lines, broken between their items where the widget is narrower (a value such as
        `44.1 samples/s` or `GPU 9.2 / peak 11.8 GB` is never split over two lines). Drawn before the first
        layout (width 0) they are one line each, so a resize, the first layout included, draws them again."""
        self._shown = (state, notice, extra)
        width = self.size.width
        lines = summary.header_lines(state, notice, bar_width=max(10, min(40, width // 5)))
        if extra:
            lines.append([Text(extra, style="dim")])
        shown = [line for items in lines for line in (pack(items, width) if width > 0 else [Text("  ").join(items)])]
        self.update(Text("\n").join(shown))

    def on_resize(self, event) -> None:
        if self._shown is not None:
            self.show_state(*self._shown)


class InfoPanel(Static):
    def show_state(self, state: RunState) -> None:
        self.update(summary.info_text(state))


class EpochTable(DataTable):
    """One row per finished epoch, then the unfinished one (dim); rebuilt whenever the app sees new events.

    An earlier best epoch is also pinned as the first row (a fixed row: it stays in view while the table
    scrolls to the latest epoch). Tens of rows, not thousands: rebuilding is cheaper than tracking edits.
    """

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_columns(*summary.EPOCH_HEADERS)

    def show_state(self, state: RunState) -> None:
        rows = state.rows
        self.clear()
        # Pinned only when the best is not the latest epoch (the table shows the latest at its bottom anyway).
        best = [row for row in rows if row.is_best and row is not rows[-1]]
        if best:
            cells = summary.epoch_cells(state, best[-1])
            cells[0] = Text(f"best {best[-1].epoch}", style="bold yellow")
            self.add_row(*cells, key="best")
        self.fixed_rows = 1 if best else 0
        for row in rows:
            self.add_row(*summary.epoch_cells(state, row), key=str(row.epoch))
        current = summary.current_epoch_cells(state)
        if current is not None:
            self.add_row(*current, key="current")
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)


class CompareTable(DataTable):
    """The runs shown together, one row each: their best figures (several runs, or the folds of one)."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_columns(*summary.COMPARE_HEADERS)

    def show_states(self, states: list[RunState]) -> None:
        self.clear()
        for i, state in enumerate(states):
            self.add_row(*summary.compare_cells(state, primary=i == 0), key=str(i))


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


class CompareRunsPicker(ModalScreen[list[Path] | None]):
    """Tick the runs to overlay on the charts (space: tick, enter: show, esc: cancel)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("enter", "done", "Show", priority=True)]

    def __init__(self, runs: list[tuple[Path, str]], current: Path, chosen: list[Path]):
        super().__init__()
        self.runs = [(p, label) for p, label in runs if p != current]
        self.chosen = set(chosen)

    def compose(self) -> ComposeResult:
        picker = SelectionList[int](
            *[(label, i, path in self.chosen) for i, (path, label) in enumerate(self.runs)], id="compare-picker"
        )
        picker.border_title = "overlay runs (space: tick, enter: show, esc: cancel)"
        yield picker

    def on_mount(self) -> None:
        self.query_one(SelectionList).focus()

    def action_done(self) -> None:
        self.dismiss([self.runs[i][0] for i in sorted(self.query_one(SelectionList).selected)])

    def action_cancel(self) -> None:
        self.dismiss(None)
