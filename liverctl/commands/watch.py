"""`liverctl watch [RUN...]`: the live TUI over runs' events, `--once` for a plain summary, `--plot` for the
charts as text."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.commands._common import console, err_console, guarded


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_command)


def watch_command(
    runs: list[str] | None = typer.Argument(
        None,
        metavar="RUN",
        help="Run or experiment folder, or its name under --runs-dir (default: the newest run). Several: their curves are "
        "overlaid, the first is followed.",
    ),
    *,
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder holding the run folders: where names are looked up."),
    once: bool = typer.Option(
        False,
        "--once",
        help="Print each run's summary as plain text and exit: 1 if the (first) run had a NaN, failed or ended "
        "before its first event.",
    ),
    plot: bool = typer.Option(
        False, "--plot", help="Print the charts once as text (for logs and notebooks) and exit like --once."
    ),
    width: int | None = typer.Option(None, "--width", min=40, help="--plot: chart width (default: the terminal's)."),
    height: int | None = typer.Option(None, "--height", min=8, help="--plot: chart height in lines (default: 16)."),
) -> None:
    """Follow a training run live: loss, Dice, learning-rate and throughput charts, epochs, NaN alarm.

    Keys: s smoothing, x step/time axis, c overlay runs, t table/charts, d dismiss NaN, r / [ ] runs, q quit.
    """
    from liverctl.errors import LiverctlError
    from liverctl.watch.locate import find_runs

    with guarded():
        if not plot and (given := [f"--{name}" for name, value in (("width", width), ("height", height))
                                   if value is not None]):
            # were ignored without a word: `watch --once --width 120` printed at the terminal's width
            raise LiverctlError(f"{' and '.join(given)} {'shape' if len(given) > 1 else 'shapes'} the charts of "
                                "--plot; add --plot (--once and the live view fit the terminal)")
        run_dir, runs_root, others, notes = find_runs(runs, runs_dir)
        if not (once or plot or _on_a_terminal()):
            err_console.print("note: not on a terminal (a log, a pipe, a notebook cell), so the summary once, as "
                              "with --once; --plot prints the charts", highlight=False, markup=False)
            once = True
        summary = once or not plot
        if not summary:  # each summary is headed by its experiment's line; charts and the live view by them all
            for note in notes:
                if note is not None:
                    console.print(note, highlight=False, markup=False)
        if once or plot:
            from liverctl.watch.once import print_once

            code = print_once(console, [run_dir, *others], summary=summary, plot=plot, width=width,
                              height=16 if height is None else height, notes=notes)
    if once or plot:
        raise typer.Exit(code)
    from liverctl.watch.app import WatchApp

    WatchApp(run_dir, runs_root, compare=others).run()


def _on_a_terminal() -> bool:
    """Whether the live view has a terminal to draw on and read keys from (textual's: the process's own stdin
    and stderr). Without one it drew its screen as escape codes into a CI log, 45 KB in 10 s, until killed."""
    import sys

    return all(stream is not None and stream.isatty() for stream in (sys.__stdin__, sys.__stderr__))
