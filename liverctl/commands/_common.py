"""What every command shares: the error boundary and the console."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import typer
from rich.console import Console

# Importing albumentations otherwise checks online for updates (2 s timeout) on every start.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Turn a `LiverctlError` into one line on stderr and a non-zero exit; let everything else through."""
    from liverctl.errors import LiverctlError

    try:
        yield
    except LiverctlError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        raise typer.Exit(130) from None


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit (for checks done in the command layer itself)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.stderr.flush()
    raise typer.Exit(code)
