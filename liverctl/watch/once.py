"""`watch --once` / `--plot`: the run's summary and charts printed once as text, for logs and notebooks
(no Textual app)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.text import Text

from liverctl.errors import LiverctlError
from liverctl.watch import charts
from liverctl.watch import summary as text
from liverctl.watch.watcher import RunWatcher


def read_runs(run_dirs: list[Path]) -> list[RunWatcher]:
    """One watcher per run folder, each read once; a run without an events log yet is an error."""
    watchers = [RunWatcher(d) for d in run_dirs]
    for watcher in watchers:
        try:
            watcher.poll()
        except OSError as exc:
            raise LiverctlError(f"cannot read the events file: {exc.strerror or exc}", path=watcher.path) from None
        if watcher.condition != "ok":
            raise LiverctlError("no events.jsonl yet (has the run started?)", path=watcher.run_dir)
    return watchers


def print_once(console: Console, run_dirs: list[Path], *, summary: bool, plot: bool, width: int | None = None,
               height: int = 16) -> int:
    """Print the first run's summary (`summary`) and every run's charts (`plot`); returns the exit status
    (`liverctl.watch.summary.exit_code` of the first run: 1 when it had a NaN or failed)."""
    watchers = read_runs(run_dirs)
    state = watchers[0].state
    if summary:
        console.print(text.render_summary(watchers[0]), highlight=False)
    if plot:
        states = [w.state for w in watchers]
        if not summary:
            console.print(text.header_text(state, watchers[0].notice), highlight=False)
        color = console.is_terminal and not console.no_color
        for spec in charts.all_charts(states, charts.ChartSettings()).values():
            out = charts.render_text(spec, width or console.width, height, color=color)
            console.print(Text.from_ansi(out) if color else Text(out), highlight=False, soft_wrap=True)
        if len(states) > 1:
            console.print(text.compare_table(states), highlight=False)
    return text.exit_code(state)
