"""What every command shares: the error boundary and the console."""

from __future__ import annotations

import codecs
import contextlib
import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperCommand

from liverctl.printable import esc, escaped

# Importing albumentations otherwise checks online for updates (2 s timeout) on every start.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# The widths a user may set, kept within these before any console reads them.
MIN_COLUMNS, MAX_COLUMNS = 20, 1000


def usable_widths(environ=os.environ) -> None:
    """COLUMNS (rich's) and TERMINAL_WIDTH (typer's `--help`) as widths liverctl can print at. One that is no
    whole number, or 0, is dropped (the terminal's own width, or 80, is used): at COLUMNS=0 rich printed
    nothing at all with exit 0, and TERMINAL_WIDTH=abc made `--help` a ValueError traceback. One outside
    MIN_COLUMNS .. MAX_COLUMNS is brought within: at COLUMNS=1 `presets` was a column of single letters, at
    100000 `--help` padded each of its lines to 100000 columns."""
    for name in ("COLUMNS", "TERMINAL_WIDTH"):
        value = environ.get(name)
        if value is None:
            continue
        if not value.strip().isdigit() or int(value) == 0:
            del environ[name]
        else:
            environ[name] = str(min(max(int(value), MIN_COLUMNS), MAX_COLUMNS))


usable_widths()

# emoji=False: a path such as `runs/:fire:` must print as written, not as an emoji. soft_wrap: a line is never
# broken by rich (a terminal wraps it at its own width; a pipe or a Kaggle notebook, where rich assumes 80
# columns, got "... in\n31.4 s"); tables still fit the width.
console = Console(emoji=False, soft_wrap=True)
err_console = Console(stderr=True, emoji=False, soft_wrap=True)


def expand_home(command: Callable) -> Callable:
    """`command` with `~` expanded in its path arguments (a `Path`, a list of them, a text such as a run
    given as ~/runs/x): `--store=~/x` reaches the program as typed (bash expands `~` only at a word's start
    or after NAME=), and so does a quoted '~/x' or one from a script's argument list."""

    @functools.wraps(command)
    def with_home(*args, **kwargs):
        return command(*args, **{name: _expand_home(value) for name, value in kwargs.items()})

    return with_home


def _expand_home(value):
    if isinstance(value, Path):
        return value.expanduser()
    if isinstance(value, str) and (value == "~" or value.startswith("~/")):
        return os.path.expanduser(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_expand_home(v) for v in value)
    return value


# The project's one convention for machine-readable output: `--json` (and runs' `--csv`) takes a file name, and
# alone, or as `--json -`, means stdout, which then holds that output alone (`FileOrStdoutCommand`).
STDOUT = "-"
OPTIONAL_FILE_OPTIONS = ("--json", "--csv")


class FileOrStdoutCommand(TyperCommand):
    """A command whose `--json` / `--csv` take an optional file name: given alone (at the end, or before another
    option) they mean stdout, as `--json -` does. Click has no optional option value; the parser would take the
    next option as the file (`evaluate s.csv --json --labels L` wrote to a file named `--labels`)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        takes_value = {name for p in self.params if p.param_type_name == "option" and not p.is_flag and not p.count
                       for name in p.opts}
        out, i = [], 0
        while i < len(args):
            arg = args[i]
            out.append(arg)
            if arg == "--":
                out += args[i + 1:]
                break
            after = args[i + 1] if i + 1 < len(args) else None
            if arg in OPTIONAL_FILE_OPTIONS and (after is None or (after.startswith("-") and after != STDOUT)):
                out.append(STDOUT)
            elif arg in takes_value and after is not None:  # an option's value is never taken for an option
                out.append(after)
                i += 1
            i += 1
        return super().parse_args(ctx, out)


def print_error(message: object) -> None:
    """One red `error:` line on stderr; the message is printed as given (a `Text`: no markup), its control characters
    escaped (a file name holding a newline made the one line two, one holding ESC moved the cursor)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", escaped(str(message))), highlight=False,
                      soft_wrap=True)


@contextlib.contextmanager
def guarded(log: bool = False) -> Iterator[None]:
    """Turn a `LiverctlError` into one line on stderr and a non-zero exit, and so a full disk that no writer
    named (an `OSError` ENOSPC, or a library's own error raised over one), a file that cannot be written
    (read-only file system, permission denied) and a file where a folder was to be made; let everything else
    through. `log`: the command's product is on disk and what it prints is only its log (train, ingest,
    submit...): a stdout that fails (see `standard_streams`) stops the printing, not the work."""
    from liverctl.disk import NOT_WRITABLE, is_disk_full, mount_point, os_error_behind
    from liverctl.errors import LiverctlError, own_line

    _output["log"] = log
    try:
        yield
    except LiverctlError as exc:
        print_error(own_line(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        raise typer.Exit(130) from None
    except Exception as exc:
        cause = os_error_behind(exc)
        where = os.fsdecode(cause.filename) if cause is not None and isinstance(cause.filename, (str, bytes)) else None
        if where and cause.errno in NOT_WRITABLE:
            print_error(not_writable_message(where, cause))
            raise typer.Exit(LiverctlError.exit_code) from None
        if where and cause.errno in (errno.ENOTDIR, errno.EEXIST) and (blocker := _file_in_the_way(where)):
            print_error(f"{where}: {blocker} is a file, not a folder; point the command at a folder")
            raise typer.Exit(LiverctlError.exit_code) from None
        if not is_disk_full(cause):
            raise
        print_error(f"{where}: no space left on {mount_point(where)}; free some space and run the command again"
                    if where else "no space left on the disk being written; free some space and run the command again")
        raise typer.Exit(LiverctlError.exit_code) from None


# Whether the command running prints only its log (`guarded(log=True)`), not its product.
_output = {"log": False}


def _unprintable(exc: UnicodeEncodeError) -> tuple[str | bytes, int]:
    """How a character the stream's encoding lacks is printed: a byte of a file name that is not UTF-8 (Python
    holds it as a lone surrogate) as that byte, as `ls` does; anything else (é on an ASCII stdout:
    PYTHONIOENCODING=ascii, a C locale without UTF-8 mode) as a backslash escape. Either was a
    UnicodeEncodeError traceback."""
    text = exc.object[exc.start:exc.end]
    if all("\udc80" <= c <= "\udcff" for c in text):
        return bytes(ord(c) - 0xDC00 for c in text), exc.end
    return codecs.backslashreplace_errors(exc)


_UNPRINTABLE = "liverctl.unprintable"
codecs.register_error(_UNPRINTABLE, _unprintable)


class StreamLost(Exception):
    """stdout failed under a command whose product it is (`runs`, `presets`, `--help`): one line, exit 2; its
    reader gone (`| head -1`): no line (nobody asked for more), exit 1, as click has it. Not an `OSError`, which
    rich would take for its own broken pipe and silence its console for good (`Console.quiet`)."""

    def __init__(self, message: str | None, exit_code: int = 2):
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


class StandardStream:
    """sys.stdout or sys.stderr while `liverctl.cli.main` runs: what a write that fails (a reader that went
    away: `| head -1`; a full disk under `> log`; a stream closed at the start: `>&-`) does.

    Once one write fails, nothing more is written to the stream (its descriptor is pointed at /dev/null, so
    neither Python's flush at exit nor a worker process fails on it again). Then a failed stderr is dropped
    (nowhere is left to say so); a failed stdout is dropped under a command that prints only its log (so a
    training goes on to its end: a full disk under it is one warning), and is `StreamLost` under one whose
    product it is."""

    def __init__(self, name: str, stream, parent: StandardStream | None = None):
        self.name = name
        self._stream = stream  # None: the descriptor was closed when Python started
        self._root = parent or self
        self.lost: OSError | None = None if stream is not None else OSError(errno.EBADF, "closed")

    def write(self, data):
        if self._root.lost is None:
            try:
                return self._stream.write(data)
            except OSError as exc:
                self._root._lose(exc)
        self._root._refuse()
        return len(data)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._root.lost is None:
            try:
                self._stream.flush()
            except OSError as exc:
                self._root._lose(exc)
                self._root._refuse()

    @property
    def buffer(self) -> StandardStream:
        """The binary stream under it (click writes there where the text encoding is ASCII), failing alike."""
        return StandardStream(self.name, self._stream.buffer, parent=self._root)

    def __getattr__(self, name: str):
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)

    def _lose(self, exc: OSError) -> None:
        self.lost = exc
        with contextlib.suppress(Exception):
            if self._stream is getattr(sys, f"__{self.name}__"):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, self._stream.fileno())
                os.close(null)
        if self.name == "stdout" and _output["log"] and exc.errno != errno.EPIPE:
            with contextlib.suppress(Exception):
                err_console.print(f"[yellow]warning:[/] stdout: {esc(_reason(exc))}; liverctl carries on without "
                                  "printing there", highlight=False)

    def _refuse(self) -> None:
        if self.name != "stdout" or _output["log"] or self.lost is None:
            return
        if self.lost.errno == errno.EPIPE:
            raise StreamLost(None, exit_code=1)
        if self.lost.errno == errno.EBADF:
            raise StreamLost("stdout is closed, so nothing could be printed; give it a file, or > /dev/null to drop it")
        raise StreamLost(f"stdout: {_reason(self.lost)}; the output is incomplete")


def _reason(exc: OSError) -> str:
    return "it is closed" if exc.errno == errno.EBADF else (exc.strerror or str(exc)).lower()


@contextlib.contextmanager
def standard_streams() -> Iterator[None]:
    """sys.stdout and sys.stderr as `StandardStream`s while the block runs (`liverctl.cli.main`), printing
    what their encoding lacks (`_unprintable`); a `StreamLost` its line and exit code. A standard descriptor
    closed at the start gets /dev/null, so no file liverctl opens (a run's events.jsonl) takes its number and
    what is written there."""
    streams = {name: getattr(sys, name) for name in ("stdin", "stdout", "stderr")}
    for stream in (streams["stdout"], streams["stderr"]):
        if getattr(stream, "errors", None) in ("strict", "surrogateescape") and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=_UNPRINTABLE)
    for fd, name in enumerate(streams):
        if streams[name] is None:
            try:
                os.fstat(fd)
            except OSError:
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
    sys.stdout, sys.stderr = StandardStream("stdout", streams["stdout"]), StandardStream("stderr", streams["stderr"])
    _output["log"] = False
    try:
        try:
            yield
        finally:  # what is still buffered (runs --json writes without flushing) fails here, if anywhere
            sys.stdout.flush()
    except StreamLost as exc:
        if exc.message:
            print_error(exc.message)
        raise SystemExit(exc.exit_code) from None
    finally:
        _output["log"] = False
        sys.stdout, sys.stderr = streams["stdout"], streams["stderr"]


def _file_in_the_way(where: str) -> str | None:
    """The file that stands where a folder on the way to `where` (or `where` itself) was to be made
    (`--runs-dir` given a file: NotADirectoryError / FileExistsError from mkdir); None if there is none."""
    path = Path(where)
    for place in (path, *path.parents):
        if place.exists():
            return None if place.is_dir() else str(place)
    return None


def not_writable_message(where: str, cause: OSError) -> str:
    """One line for an `OSError` of `liverctl.disk.NOT_WRITABLE` on `where`: the file, the folder it is in, what to do.
    A relative name (a default such as runs/ or submission.csv) is shown with the folder it is in."""
    full = os.path.abspath(where)
    shown = where if where == full else f"{where} (in {os.path.dirname(full)})"
    if cause.errno != errno.EROFS:  # permission denied: reading or writing
        return f"{shown}: {(cause.strerror or 'permission denied').lower()}"
    return f"{shown}: read-only file system; point the command at a folder you can write to"


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit (for checks done in the command layer itself)."""
    print_error(message)
    sys.stderr.flush()
    raise typer.Exit(code)


class ProgressBar:
    """One line of progress on stderr (`progress_bar`): a stage's name, a bar, done/total, the elapsed time
    and the last thing done. Library code reports through callbacks; commands turn them into these calls."""

    def __init__(self, progress, off_terminal=None) -> None:
        self._progress = progress
        self._task = None
        self._off_terminal = off_terminal  # a `PipeProgress` writing the line now and then where it cannot move

    def stage(self, name: str, total: int | None = None) -> None:
        """Start a stage (replacing the previous one): `total` steps, None while unknown."""
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(name, total=total, last="")
        if self._off_terminal is not None:
            self._off_terminal.restart()

    def update(self, *, total: int | None = None, done: int | None = None, advance: int = 0, last: str | None = None):
        """Set the total, the steps done or advance by some; `last`: rich markup shown after the bar."""
        fields = {"last": last} if last is not None else {}
        if total is not None:
            fields["total"] = total
        if done is not None:
            fields["completed"] = done
        self._progress.update(self._task, advance=advance, **fields)
        if self._off_terminal is not None:
            self._off_terminal.tick()


@contextlib.contextmanager
def progress_bar(unit: str = "", transient: bool = False, on_terminal: bool = True) -> Iterator[ProgressBar]:
    """A `ProgressBar` shown while the block runs; `unit` is printed after done/total (e.g. "slices");
    `transient`: remove the line at the end. Off a terminal (a log, a pipe) nothing moves: the bar is written
    once, at the end, only when the block succeeded and is not `transient` (rich wrote its last state before
    the command's error, and a blank line for a transient one); while it runs, a stage of minutes writes its state
    now and then (`liverctl.pipe_progress`). `on_terminal` False: no bar on a terminal (a block that draws live
    lines of its own: `train --folds`, whose trainer draws its epoch line; rich allows one live display)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from liverctl.pipe_progress import PipeProgress

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(unit)] if unit else []
    columns += [TimeElapsedColumn(), TextColumn("{task.fields[last]}")]
    live = err_console.is_terminal
    with Progress(*columns, console=err_console, transient=transient, disable=not (live and on_terminal)) as progress:
        now_and_then = None if live else PipeProgress(lambda: err_console.print(progress.get_renderable()))
        yield ProgressBar(progress, now_and_then)
    if not live and not transient:
        err_console.print(progress.get_renderable())
