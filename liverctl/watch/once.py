"""`watch --once` / `--plot`: the run's summary and charts printed once as text, for logs and notebooks
(no Textual app). On a terminal narrower than a line or the epochs table, lines break between their items
and the table becomes one block of `header value` pairs per epoch (`liverctl.narrow`): no value is cut."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.text import Text

from liverctl.errors import LiverctlError
from liverctl.narrow import print_lines, print_table
from liverctl.watch import charts
from liverctl.watch import summary as text
from liverctl.watch.state import RunState
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
               height: int = 16, notes: list[str | None] | None = None) -> int:
    """Print every run's summary (`summary`: one after another, a blank line between, each beneath its line in
    `notes`, one per run: an experiment's, None for a plain run) and their charts (`plot`: overlaid); returns the
    exit status (`liverctl.watch.summary.exit_code` of the first run, the one followed: 1 when it had a NaN or
    failed). `watch r1 r2 --once` printed r1's summary alone, r2 dropped without a word."""
    watchers = read_runs(run_dirs)
    state = watchers[0].state
    if summary:
        for i, watcher in enumerate(watchers):
            if i:
                console.print()
            note = notes[i] if notes and i < len(notes) else None
            if note is not None:  # 'watch r1 exp --once' printed exp's line above r1, as if r1 were its fold
                console.print(note, highlight=False, markup=False)
            print_summary(console, watcher)
    if plot:
        states = [w.state for w in watchers]
        if not summary:
            print_lines(console, text.header_lines(state, watchers[0].notice))
        color = console.is_terminal and not console.no_color
        for spec in charts.all_charts(states, charts.ChartSettings()).values():
            out = charts.render_text(spec, width or console.width, height, color=color)
            console.print(Text.from_ansi(out) if color else Text(out), highlight=False, soft_wrap=True)
        if len(states) > 1:
            rows = [text.compare_cells(s, primary=i == 0) for i, s in enumerate(states)]
            print_table(console, text.compare_table(states), "runs", list(text.COMPARE_HEADERS), rows)
    return text.exit_code(state)


def print_summary(console: Console, watcher: RunWatcher) -> None:
    """What `watch --once` prints: the header, the NaN report, the epochs table, the checkpoints."""
    state: RunState = watcher.state
    print_lines(console, text.header_lines(state, watcher.notice))
    prose = []
    if state.has_nan:
        prose.append(Text(text.nan_banner_text(state), style="bold white on red"))
    steps = text.steps_text(state)
    if steps is not None:
        prose.append(steps)
    _print_prose(console, prose)
    if state.epochs or state.current_epoch() is not None:
        print_table(console, text.epochs_table(state), "epochs", list(text.EPOCH_HEADERS), text.epoch_rows(state))
    else:
        # "started" was wrong: the first epoch runs for a while before it logs a step (train.log_every)
        console.print(Text("no epoch finished" + (" yet" if state.status == "running" else ""), style="dim"),
                      highlight=False)
    _print_prose(console, [text.info_text(state)])


def _print_prose(console: Console, texts: list[Text]) -> None:
    """Sentences: on a terminal rich breaks them between words at its width, elsewhere they stay whole."""
    for part in texts:
        console.print(part, highlight=False, soft_wrap=not console.is_terminal)
