"""`liverctl watch [RUN]`: the live TUI over a run's events, or `--once` for a plain summary."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.commands._common import console, guarded


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_command)


def watch_command(
    run: str | None = typer.Argument(None, help="Run folder, or run name under --runs-dir (default: the newest run)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder holding the run folders."),
    once: bool = typer.Option(
        False, "--once", help="Print the summary as plain text and exit: 1 if the run had a NaN or failed."
    ),
) -> None:
    """Follow a training run live: status, loss and Dice charts, epochs, NaN alarm (keys: d r [ ] q)."""
    from liverctl.watch.locate import find_run

    with guarded():
        from liverctl.experiment.folder import current_fold

        fold = current_fold(run, runs_dir) if run else None  # an experiment: follow its current fold
        if fold is not None:
            console.print(fold[1], highlight=False)
            run = str(fold[0])
        run_dir, runs_root = find_run(run, runs_dir)
        if once:
            _print_once(run_dir)
    from liverctl.watch.app import WatchApp

    WatchApp(run_dir, runs_root).run()


def _print_once(run_dir: Path) -> None:
    from liverctl.errors import LiverctlError
    from liverctl.watch import summary
    from liverctl.watch.state import RunWatcher

    watcher = RunWatcher(run_dir)
    try:
        watcher.poll()
    except OSError as exc:
        raise LiverctlError(f"cannot read the events file: {exc.strerror or exc}", path=watcher.path) from None
    if watcher.condition != "ok":
        raise LiverctlError("no events.jsonl yet (has the run started?)", path=run_dir)
    console.print(summary.render_summary(watcher), highlight=False)
    raise typer.Exit(summary.exit_code(watcher.state))
