"""The `liverctl` command line: one Typer app, commands registered from `liverctl.commands.*`.

No logic lives here; see `liverctl/commands/` for the thin command bodies.
"""

from __future__ import annotations

import importlib
import inspect

import typer

from liverctl.commands._common import expand_home
from liverctl.printable import quoted

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


def help_paragraphs(doc: str) -> str:
    """A command's docstring as its help: each paragraph's lines joined into one. Typer's rich help keeps a
    docstring's line breaks, so `liverctl --help` broke `verify`'s and `train`'s descriptions in mid-sentence
    at every width but the one the source was wrapped for."""
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


for _command in [*app.registered_commands, *(c for g in app.registered_groups for c in g.typer_instance.registered_commands)]:
    if _command.help is None and _command.callback.__doc__:
        _command.help = help_paragraphs(_command.callback.__doc__)
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


def empty_argument(args: list[str]) -> str | None:
    """The words for the first empty argument in `args`, or None. Typer takes `''` for a path as `.`, so an
    unset shell variable (`liverctl synth "$OUT"`) wrote a 2 GB dataset into the current folder and
    `ingest "$DATA"` ingested it; no option of liverctl means anything by an empty value."""
    for i, arg in enumerate(args):
        if arg.startswith("--") and arg.endswith("=") and len(arg) > 3:
            return f"{arg[:-1]} is given an empty value"
        if arg == "":
            before = args[i - 1] if i else ""
            if before.startswith("-") and "=" not in before:
                return f"{before} is given an empty value"
            return f"the argument after {quoted(before)} is empty" if before else "the first argument is empty"
    return None


def main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """The console entry point (and `python -m liverctl`): an empty argument, often a shell variable that was
    never set, is refused before Typer reads it as the current folder."""
    import sys

    from liverctl.commands._common import print_error, standard_streams

    args = sys.argv[1:] if argv is None else list(argv)
    with standard_streams():
        problem = empty_argument(args)
        if problem is not None:
            print_error(f"{problem} (an unset shell variable?); give a value, `.` for the current folder")
            raise SystemExit(2)
        try:
            app(args=args, prog_name=prog_name)  # click ends every command with SystemExit
        except SystemExit as end:
            if end.code in (0, None):
                spare_the_exit_collections()
            raise


def spare_the_exit_collections() -> None:
    """At the end of a command that succeeded: collect the garbage once (every finalizer of what the command
    left behind runs now, as it would have at exit), then freeze what is left (the imported modules: torch,
    timm, torchvision, dynamo's sympy, zarr, ~400,000 objects) out of the collector's reach.

    Python's exit clears every module and runs full collections over all of it as it goes: after `submit`'s last
    line 0.96-1.07 s to the process's end on an idle machine, 0.37 s with this (BENCHMARKS.md, "Exit"), more on a
    loaded one. Frozen objects are still freed as their modules are cleared, atexit handlers and threads'
    joins run as before; only a reference cycle that the clearing itself leaves behind is never collected,
    a cycle among module-level objects, not a file of the command's (every file liverctl writes is closed,
    and fsynced, before its command ends). A command that failed exits as before."""
    import gc

    gc.collect()
    gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    main()
