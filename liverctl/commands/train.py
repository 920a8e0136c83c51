"""`liverctl train` and `liverctl presets [show NAME]`: thin commands over liverctl.train / liverctl.config."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.commands._common import console, guarded, progress_bar
from liverctl.device import DEVICE_HELP
from liverctl.plural import plural
from liverctl.printable import esc

presets_app = typer.Typer(help="List the training presets, or print one fully resolved.", no_args_is_help=False)


@presets_app.callback(invoke_without_command=True)
def presets_list(ctx: typer.Context) -> None:
    """List the presets with their one-line description."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from liverctl.config import list_presets

    with guarded():
        table = Table(show_header=True, header_style="bold", box=None)
        table.add_column("preset")
        table.add_column("description")
        for name, description in list_presets().items():
            table.add_row(esc(name), esc(description))
        console.print(table)


@presets_app.command("show")
def presets_show(
    name: str = typer.Argument(..., metavar="NAME", help="Preset name (see `liverctl presets`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: section.key=value (repeatable)."),
) -> None:
    """Print the resolved config of a preset (defaults <- preset <- --set) as TOML."""
    from liverctl.config import resolve_config, to_toml

    with guarded():
        cfg = resolve_config(name, set_)
        typer.echo(to_toml(cfg), nl=False)


def train(
    *,
    preset: str = typer.Option(None, "--preset", "-p", help="Preset to train (see `liverctl presets`); not needed with --resume."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: section.key=value (repeatable)."),
    store: Path = typer.Option(None, "--store", help="Zarr store (default: the config's data.store, store/liver.zarr unless changed)."),
    name: str = typer.Option(None, "--name", help="Run name (default: <preset>-<timestamp>)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder holding the run folders: the new run goes here, --resume names are looked up here."),
    resume: str = typer.Option(None, "--resume", help="Continue RUN (a run or experiment folder, or its name under --runs-dir) from its last checkpoint."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    time_limit: str = typer.Option(None, "--time-limit", help="Stop cleanly with a checkpoint before this budget (11h, 90m, 1h30m, 3600s: each number with its unit)."),
    epochs: int = typer.Option(None, "--epochs", help="Shortcut for --set train.epochs=N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress line (events still go to the run's log)."),
    folds: str = typer.Option(None, "--folds", help="all | 0,2,4: train these folds as one experiment, each fold in <runs-dir>/<name>/fold-<k>/."),
) -> None:
    """Train one fold of the store into runs/<name>/ (events.jsonl, config.toml, checkpoints), or with
    --folds every fold as one experiment (out-of-fold predictions, threshold and post-processing chosen)."""
    import os

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

    with guarded(log=True):
        from liverctl.config import check_shortcuts
        from liverctl.experiment.train import train_experiment, wants_experiment
        from liverctl.train.budget import parse_duration
        from liverctl.train.start import TrainRequest, train_run

        shortcuts = {key: (option, value) for key, option, value in
                     (("data.store", "--store", store), ("train.epochs", "--epochs", epochs)) if value is not None}
        check_shortcuts(set_, {key: f"{option} {value}" for key, (option, value) in shortcuts.items()})
        values = {key: str(value) if isinstance(value, Path) else value for key, (_, value) in shortcuts.items()}
        request = TrainRequest(
            preset=preset, sets=tuple(set_), values=values, name=name, runs_dir=runs_dir, resume=resume, folds=folds,
            device=device, time_limit_s=parse_duration(time_limit) if time_limit else None, show_progress=not quiet,
        )
        if wants_experiment(request):
            from liverctl.commands.experiment import print_experiment

            # off a terminal (a notebook's log) a fold's out-of-fold prediction, minutes for a large preset, writes
            # its line now and then; a terminal shows the fold lines as before (the trainer's epoch line is live)
            with progress_bar("slices", transient=True, on_terminal=False) as bar:
                progress = {"on_stage": bar.stage, "on_slices": lambda n: bar.update(advance=n)} if not quiet else {}
                summary = train_experiment(request, say=_say, **progress)
            print_experiment(summary)
            status = summary["status"]
        else:
            result = train_run(request, on_start=_print_start)
            if result["is_main"]:
                _print_result(result)
            status = result["status"]
        if status == "interrupted":
            raise typer.Exit(130)


def _say(text: str) -> None:
    """A line of an experiment's training (`FoldOptions.say`): plain text, printed as written."""
    console.print(esc(text), highlight=False)


def _print_start(run_dir: Path, cfg: dict) -> None:
    from rich.text import Text

    from liverctl.runs.folder import EVENTS_FILE

    console.print(Text.assemble("run ", (str(run_dir), "bold"), f" ({cfg['preset']}): events in {run_dir / EVENTS_FILE}"),
                  highlight=False)


def _print_result(result: dict) -> None:
    best = result["best"]
    dice = "-" if best.get("volume_dice") is None else f"{best['volume_dice']:.4f} (epoch {best.get('epoch')})"
    console.print(f"{result['status']}: {plural(result['epochs_done'], 'epoch')}, best volume Dice {dice} "
                  f"in {result['run_dir']}", highlight=False, markup=False)


def convert_checkpoint(
    old: Path = typer.Argument(..., metavar="OLD", help="Checkpoint of the previous format (holds pickled Python objects)."),
    new: Path = typer.Argument(..., metavar="NEW", help="The plain-data checkpoint to write (.pt; its .json sidecar goes beside it)."),
    trust_code: bool = typer.Option(
        False, "--trust-code", help="Required: reading OLD unpickles it fully, which RUNS ANY CODE IT CONTAINS."
    ),
) -> None:
    """Rewrite a checkpoint of an earlier liverctl as plain data. This RUNS CODE FROM OLD: only for files you trust."""
    from liverctl.runs.checkpoint import convert_checkpoint as convert

    with guarded(log=True):
        path = convert(old, new, trust_code=trust_code)
        console.print(f"wrote {path} (plain data: loads without running code)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("convert-checkpoint")(convert_checkpoint)
    app.add_typer(presets_app, name="presets")
