"""`liverctl train` and `liverctl presets [show NAME]`: thin commands over liverctl.train / liverctl.config."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from liverctl.commands._common import console, esc, guarded

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
    name: str = typer.Argument(..., help="Preset name (see `liverctl presets`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: section.key=value (repeatable)."),
) -> None:
    """Print the resolved config of a preset (defaults <- preset <- --set) as TOML."""
    from liverctl.config import resolve_config, to_toml

    with guarded():
        cfg = resolve_config(name, set_)
        typer.echo(to_toml(cfg), nl=False)


def train(
    preset: str = typer.Option(None, "--preset", "-p", help="Preset to train (see `liverctl presets`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: section.key=value (repeatable)."),
    store: Path = typer.Option(None, "--store", help="Zarr store (default: data.store of the config)."),
    name: str = typer.Option(None, "--name", help="Run name (default: <preset>-<timestamp>)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder holding the runs."),
    resume: str = typer.Option(None, "--resume", help="Continue RUN (a name under --runs-dir or a path) from its last checkpoint."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    time_limit: str = typer.Option(None, "--time-limit", help="Stop cleanly with a checkpoint before this budget (e.g. 11h, 90m)."),
    epochs: int = typer.Option(None, "--epochs", help="Shortcut for --set train.epochs=N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress line (events still go to the run's log)."),
    folds: str = typer.Option(None, "--folds", help="all | 0,2,4: train these folds as one experiment under runs/<name>/fold-<k>/."),
) -> None:
    """Train one fold of the store into runs/<name>/ (events.jsonl, config.toml, checkpoints), or with
    --folds every fold as one experiment (out-of-fold predictions, threshold and post-processing chosen)."""
    import os

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from liverctl.errors import LiverctlError

    with guarded(), contextlib.ExitStack() as held:
        from rich.text import Text

        from liverctl.config import read_config, resolve_config
        from liverctl.runs.checkpoint import read_sidecar
        from liverctl.runs.folder import (
            CONFIG_FILE,
            RunLock,
            check_fresh,
            find_resume_run,
            run_dir_for,
        )
        from liverctl.train import distributed
        from liverctl.train.budget import parse_duration
        from liverctl.train.loop import run_training

        overrides = list(set_)
        if store is not None:
            overrides.append(f"data.store={str(store)!r}".replace("'", '"'))
        if epochs is not None:
            overrides.append(f"train.epochs={epochs}")
        limit_s = parse_duration(time_limit) if time_limit else None
        from liverctl.experiment.folder import find_experiment

        experiment = find_experiment(resume, runs_dir) if resume else None
        if folds is not None or experiment is not None:
            from liverctl.commands.experiment import train_experiment

            return train_experiment(preset=preset, overrides=overrides, folds=folds, name=name, runs_dir=runs_dir,
                                    resume=resume, resume_dir=experiment, device=device, time_limit_s=limit_s, quiet=quiet)
        info = distributed.from_env()
        if resume:
            run_dir = find_resume_run(runs_dir, resume)
            if info.is_main:  # held until the run ends; a second writer is refused here, at once
                held.enter_context(RunLock(run_dir))
            cfg = read_config(run_dir / CONFIG_FILE)
            if preset and preset != cfg.get("preset"):
                raise LiverctlError(
                    f"--resume {resume}: that run was made by preset '{cfg.get('preset')}', not '{preset}'"
                )
            if overrides:
                cfg = resolve_config(cfg["preset"], [*_as_overrides(cfg), *overrides])
            done = (read_sidecar(run_dir, "last") or {}).get("epoch")
            done = done if isinstance(done, int) and not isinstance(done, bool) else 0  # the .pt is checked on load
            if done >= cfg["train"]["epochs"]:
                raise LiverctlError(
                    f"--resume {resume}: the run already completed its {done} epochs; "
                    f"continue it with --epochs N (N > {done})"
                )
        else:
            if not preset:
                raise LiverctlError("give --preset NAME (see `liverctl presets`) or --resume RUN")
            cfg = resolve_config(preset, overrides)
            run_dir = run_dir_for(runs_dir, name, preset)
            preflight(cfg)  # before a run folder exists: a bad store or missing weights leave nothing behind
            if info.enabled and not name:
                raise LiverctlError("under torchrun give --name so that every rank writes to the same run folder")
            if info.is_main:  # other ranks of a torchrun job write into the folder rank 0 made
                held.enter_context(RunLock(run_dir))
                check_fresh(run_dir)
        if info.is_main:
            console.print(Text.assemble("run ", (str(run_dir), "bold"),
                                        f" ({cfg['preset']}): events in {run_dir / 'events.jsonl'}"), highlight=False)
        result = run_training(cfg, run_dir, resume=bool(resume), device=device, time_limit_s=limit_s, show_progress=not quiet)
        if info.is_main:
            best = result["best"]
            dice = "-" if best.get("volume_dice") is None else f"{best['volume_dice']:.4f}"
            console.print(
                f"{result['status']}: {result['epochs_done']} epochs, best volume Dice {dice} "
                f"(epoch {best.get('epoch')}) in {run_dir}",
                highlight=False, markup=False,
            )
        if result["status"] == "interrupted":
            raise typer.Exit(130)


def preflight(cfg: dict) -> None:
    """The checks that need no training set-up: the store opens, the fold exists, weights can be had."""
    from liverctl.config import is_none
    from liverctl.data.dataset import split_rows
    from liverctl.data.store import LiverStore
    from liverctl.train.models import check_weights_available

    store = LiverStore.open(cfg["data"]["store"])
    split_rows(store, cfg["data"]["fold"], cfg["data"]["max_val_cases"])  # the fold has cases, so do the others
    m = cfg["model"]
    if not is_none(m["encoder_weights"]) and is_none(m["encoder_weights_path"]):
        check_weights_available(m["encoder"], m["encoder_weights"])


def _as_overrides(cfg: dict) -> list[str]:
    """A resolved config as --set strings (to re-resolve it with more overrides on resume)."""
    import tomli_w

    out = []
    for section, body in cfg.items():
        if isinstance(body, dict):
            for key, value in body.items():
                out.append(f"{section}.{key}={tomli_w.dumps({'v': value})[4:].strip()}")
    return out


def convert_checkpoint(
    old: Path = typer.Argument(..., help="Checkpoint of the previous format (holds pickled Python objects)."),
    new: Path = typer.Argument(..., help="The plain-data checkpoint to write (.pt; its .json sidecar goes beside it)."),
    trust_code: bool = typer.Option(
        False, "--trust-code", help="Required: reading OLD unpickles it fully, which RUNS ANY CODE IT CONTAINS."
    ),
) -> None:
    """Rewrite a checkpoint of an earlier liverctl as plain data. This RUNS CODE FROM OLD: only for files you trust."""
    from liverctl.runs.checkpoint import convert_checkpoint as convert

    with guarded():
        path = convert(old, new, trust_code=trust_code)
        console.print(f"wrote {path} (plain data: loads without running code)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("convert-checkpoint")(convert_checkpoint)
    app.add_typer(presets_app, name="presets")
