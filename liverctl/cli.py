"""The `liverctl` command line: one Typer app, commands registered from `liverctl.commands.*`.

No logic lives here; see `liverctl/commands/` for the thin command bodies.
"""

from __future__ import annotations

import importlib

import typer

from liverctl.commands._common import expand_home

app = typer.Typer(
    name="liverctl",
    help="CT liver segmentation: NIfTI folder -> Zarr store -> trained U-Net -> Kaggle submission.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Order here is the order in `liverctl --help`: the pipeline, then the tools around it.
_COMMAND_MODULES = ["data", "train", "watch", "submit", "runs", "bench"]

for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"liverctl.commands.{_name}")
    except ModuleNotFoundError as exc:  # an area not built yet must not break the others
        if exc.name != f"liverctl.commands.{_name}":
            raise
        continue
    _module.register(app)

for _command in [*app.registered_commands, *(c for g in app.registered_groups for c in g.typer_instance.registered_commands)]:
    _command.callback = expand_home(_command.callback)


def _print_version(value: bool) -> None:
    if value:
        from liverctl import __version__

        typer.echo(f"liverctl {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """The app's own options; `--help` shows Typer(help=...) above."""


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
