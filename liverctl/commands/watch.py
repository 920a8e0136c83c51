"""`liverctl watch [RUN...]`: the live TUI over runs' events, `--once` for a plain summary, `--plot` for the
charts as text."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.commands._common import console, guarded


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_command)


def watch_command(
    runs: list[str] | None = typer.Argument(
        None,
        help="Run folder or run name under --runs-dir (default: the newest run). Several: their curves are "
        "overlaid, the first is followed.",
    ),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder holding the run folders."),
    once: bool = typer.Option(
        False, "--once", help="Print the summary as plain text and exit: 1 if the run had a NaN or failed."
    ),
    plot: bool = typer.Option(
        False, "--plot", help="Print the charts once as text (for logs and notebooks) and exit like --once."
    ),
    width: int | None = typer.Option(None, "--width", min=40, help="--plot: chart width (default: the terminal's)."),
    height: int = typer.Option(16, "--height", min=8, help="--plot: chart height in lines."),
) -> None:
    """Follow a training run live: loss, Dice, learning-rate and throughput charts, epochs, NaN alarm.

    Keys: s smoothing, x step/time axis, c overlay runs, t table/charts, d dismiss NaN, r / [ ] runs, q quit.
    """
    from liverctl.watch.locate import find_run

    with guarded():
        from liverctl.experiment.folder import current_fold

        names = []
        for name in runs or [None]:
            fold = current_fold(name, runs_dir) if name else None  # an experiment: follow its current fold
            if fold is not None:
                console.print(fold[1], highlight=False, markup=False)
                name = str(fold[0])
            names.append(name)
        found = [find_run(name, runs_dir) for name in names]
        run_dir, runs_root = found[0]
        others = [d for d, _ in found[1:]]
        if once or plot:
            _print_once(run_dir, others, summary=once or not plot, plot=plot, width=width, height=height)
    from liverctl.watch.app import WatchApp

    WatchApp(run_dir, runs_root, compare=others).run()


def _print_once(
    run_dir: Path, others: list[Path], *, summary: bool, plot: bool, width: int | None, height: int
) -> None:
    from rich.text import Text

    from liverctl.errors import LiverctlError
    from liverctl.watch import charts
    from liverctl.watch import summary as text
    from liverctl.watch.state import RunWatcher

    watchers = [RunWatcher(d) for d in [run_dir, *others]]
    for watcher in watchers:
        try:
            watcher.poll()
        except OSError as exc:
            raise LiverctlError(f"cannot read the events file: {exc.strerror or exc}", path=watcher.path) from None
        if watcher.condition != "ok":
            raise LiverctlError("no events.jsonl yet (has the run started?)", path=watcher.run_dir)
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
    raise typer.Exit(text.exit_code(state))
