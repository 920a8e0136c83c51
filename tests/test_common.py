"""`liverctl/commands/_common.py`: the error printer and every console line escape what users typed.

A path, id or config value holding square brackets is printed as written: never read as rich markup
(`nope[/bold]x` raised MarkupError, `volume-a[b]c.nii.gz` lost its `[b]`, the hint `[low, high]`
vanished), nor emoji codes.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from pathlib import Path

import pytest
import typer
from run_fixtures import make_run
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.commands._common import fail, guarded
from liverctl.errors import LiverctlError
from liverctl.printable import esc


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_closing_tag_in_a_path_is_printed_not_parsed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke("ingest", "nope[/bold]x")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == "error: nope[/bold]x: no such folder"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_file_name_with_brackets_keeps_them(tmp_path):
    data = tmp_path / "d"
    (data / "train" / "volume").mkdir(parents=True)
    (data / "train" / "segmentation").mkdir()
    (data / "train" / "volume" / "volume-a[b]c.nii.gz").write_bytes(b"not a nifti")
    result = _invoke("ingest", data, "--store", tmp_path / "s.zarr", "--workers", "1")
    assert result.exit_code == 2
    assert "volume-a[b]c.nii.gz: case id 'a[b]c' must start" in result.output


def test_a_config_hint_in_brackets_survives():
    result = _invoke("presets", "show", "demo", "--set", "data.window=[5, 1]")
    assert result.exit_code == 2
    assert result.output.strip() == "error: data.window must be [low, high] in HU with low < high, got [5, 1]"


@pytest.mark.parametrize("text", ["[bold]x[/]", "a[/]b", "x\\", ":fire: [red]", "[link=file:///etc]y"])
def test_guarded_and_fail_print_any_message_exactly(text, capsys):
    with pytest.raises(typer.Exit) as info, guarded():
        raise LiverctlError(text, path="p[x]")
    assert info.value.exit_code == 2
    assert capsys.readouterr().err.strip() == f"error: p[x]: {text}"
    with pytest.raises(typer.Exit):
        fail(text)
    assert capsys.readouterr().err.strip() == f"error: {text}"


def test_run_names_and_values_with_brackets_in_runs_and_watch(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a[b]c", start_ts=1_700_000_000)
    make_run(root, "plain", start_ts=1_700_001_000, settings={"loss.name": "[red]tversky"})
    result = _invoke("runs", root)
    assert result.exit_code == 0, result.output
    assert "a[b]c" in result.output and "[red]tversky" in result.output
    result = _invoke("watch", "a[b]c", "--runs-dir", root, "--once")
    assert "a[b]c" in result.output


def test_a_full_disk_no_writer_named_is_still_one_line(tmp_path, capsys):
    """A library's own error over ENOSPC (torch.save's RuntimeError, or a bare OSError from zarr) reaching the
    command is the full-disk line with exit 2, not a traceback; any other error goes on as it is."""
    import errno

    from liverctl.disk import mount_point

    def full(filename):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904

    target = tmp_path / "oof.zarr" / "c" / "0"
    for filename, expected in [
        (str(target), f"error: {target}: no space left on {mount_point(tmp_path)}; free some space and run"),
        (None, "error: no space left on the disk being written; free some space and run"),
    ]:
        with pytest.raises(typer.Exit) as info, guarded():
            full(filename)
        assert info.value.exit_code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(expected) and line.endswith("the command again"), line
    with pytest.raises(RuntimeError, match="unexpected pos"), guarded():
        try:
            raise OSError(errno.EIO, "Input/output error")
        except OSError:
            raise RuntimeError("unexpected pos")  # noqa: B904


def test_an_error_raised_in_a_dataloader_worker_is_its_own_line(capsys):
    """torch rebuilds a worker's exception as 'Caught LiverctlError in DataLoader worker process 0.' plus the
    worker's traceback; the command prints the line the worker raised."""
    import sys

    from torch._utils import ExceptionWrapper

    try:
        raise LiverctlError("chunk of slice 3 cannot be decoded", path="s.zarr/cases/0/image/c/0/0/3")
    except LiverctlError:
        wrapped = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0")
    with pytest.raises(typer.Exit) as info, guarded():
        wrapped.reraise()
    assert info.value.exit_code == 2
    assert capsys.readouterr().err.strip() == "error: s.zarr/cases/0/image/c/0/0/3: chunk of slice 3 cannot be decoded"


@pytest.mark.parametrize("code, said", [(errno.EROFS, "read-only file system; point the command at a folder you "
                                          "can write to"), (errno.EACCES, "permission denied")])
def test_a_place_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, monkeypatch, code, said):
    """A read-only mount (Kaggle's /kaggle/input, a read-only current folder holding the default runs/) or a
    folder of another user's: one line naming the file and its folder, not a traceback and exit 1."""
    def refuse(self, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Path, "mkdir", refuse)
    result = _invoke("synth", "d", "--cases", "1", "--test-cases", "0", "--size", "32", "--slices", "4")
    assert result.exit_code == 2, result.output
    # synth writes into a hidden folder beside d first (files.staged_folder): the line names d, not that folder
    assert result.output.strip().splitlines()[-1] == f"error: d (in {tmp_path}): {said}"


def test_a_library_error_over_an_unwritable_file_is_one_line(tmp_path, capsys):
    """torch.save's RuntimeError over the OSError; an absolute path is shown as it is."""
    with pytest.raises(typer.Exit) as info, guarded():
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "x.pt"))
        except OSError as exc:
            raise RuntimeError("[enforce fail at inline_container.cc] cannot open file") from exc
    assert info.value.exit_code == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'x.pt'}: read-only file system; point the "
                                               "command at a folder you can write to")


def test_a_file_where_a_folder_is_to_be_made_is_one_line_and_exit_2(tmp_path, monkeypatch):
    """`train --runs-dir FILE` (a run folder made under a file), or any folder argument through a file, ended
    in a NotADirectoryError traceback from mkdir, exit 1."""
    monkeypatch.chdir(tmp_path)
    Path("a-file").write_text("mine")
    result = _invoke("synth", "a-file/d", "--cases", "1", "--test-cases", "0", "--size", "32", "--slices", "4")
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: a-file/d") and last.endswith(
        ": a-file is a file, not a folder; point the command at a folder"), result.output
    assert Path("a-file").read_text() == "mine"


def test_an_error_under_a_transient_progress_bar_is_the_only_line_off_a_terminal(tmp_path):
    """`submit --tta bogus` in a log or a notebook cell (stderr not a terminal): a blank line, the transient bar
    leaving nothing to clear, then the error. A bar that stays (ingest's) still writes its last state."""
    run = make_run(tmp_path / "runs", "r")
    result = _invoke("submit", "--run", run, "--tta", "bogus", "--out", tmp_path / "s.csv")
    assert result.exit_code == 2
    assert result.stderr == "error: unknown TTA mode 'bogus'; valid: none, hflip, vflip, hflip+vflip, flips\n"


def test_a_command_that_fails_under_its_progress_bar_prints_the_error_alone_off_a_terminal(tmp_path):
    """`synth --size 16` or `ingest lits` without labels in a log: the bar's last state ('synth 0/10 0:00:00')
    came first, then the error. Off a terminal the bar is written once, at the end, and only when the work
    succeeded."""
    failed = _invoke("synth", tmp_path / "d", "--size", "16")
    assert failed.exit_code == 2
    assert failed.stderr == "error: --size 16 is too small (minimum 32)\n"
    done = _invoke("synth", tmp_path / "d", "--size", "32", "--slices", "3", "--cases", "2", "--test-cases", "0",
                   "--workers", "1")
    assert done.exit_code == 0, done.output
    (bar,) = done.stderr.splitlines()
    assert bar.startswith("synth ") and " 2/2 " in bar


def test_off_a_terminal_a_long_block_writes_its_bar_now_and_then(tmp_path, monkeypatch):
    """`!liverctl submit` in a notebook cell, or ingest into a log: nothing was written until the end (a
    512 x 512 x 900 case predicted by two runs: 3 minutes without a line). The bar's line is now written every
    `pipe_progress.EVERY_SECONDS` while the block runs (0 here: after every update), and once at the end."""
    import liverctl.pipe_progress

    args = ("synth", tmp_path / "d", "--size", "32", "--slices", "3", "--cases", "3", "--test-cases", "0", "--workers", "1")
    quick = _invoke(*args)
    assert quick.exit_code == 0, quick.output
    assert len(quick.stderr.splitlines()) == 1  # a command that ends within the interval: its last state alone
    monkeypatch.setattr(liverctl.pipe_progress, "EVERY_SECONDS", 0.0)
    slow = _invoke(args[0], tmp_path / "e", *args[2:])
    assert slow.exit_code == 0, slow.output
    lines = slow.stderr.splitlines()
    assert len(lines) > 2 and all(line.startswith("synth ") for line in lines), slow.stderr
    assert " 1/3 " in lines[0] and " 3/3 " in lines[-1]


def test_off_a_terminal_a_stage_writes_its_first_line_an_interval_into_it(monkeypatch, capsys):
    """`train --folds` holds one bar over the experiment and starts a stage for each fold's out-of-fold prediction,
    an hour of training after the one before: its line came at its first slices, a stage of seconds wrote one.
    A stage now starts its own interval."""
    import liverctl.pipe_progress
    from liverctl.commands._common import progress_bar

    now = [0.0]
    monkeypatch.setattr(liverctl.pipe_progress.time, "monotonic", lambda: now[0])
    with progress_bar("slices", transient=True, on_terminal=False) as bar:
        bar.stage("fold 0 out-of-fold", total=10)
        bar.update(advance=4)
        now[0] = 3600.0  # the next fold trains for an hour
        bar.stage("fold 1 out-of-fold", total=10)
        bar.update(advance=4)
        assert capsys.readouterr().err == ""
        now[0] += liverctl.pipe_progress.EVERY_SECONDS
        bar.update(advance=4)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fold 1 out-of-fold") and " 8/10 slices " in lines[0], lines


class _Failing(io.TextIOBase):
    """A standard stream every write to which fails as `code` says: EPIPE (`| head -1`, the reader gone), ENOSPC
    (`> /dev/full`)."""

    def __init__(self, code: int):
        self.code = code

    def write(self, text):
        raise OSError(self.code, os.strerror(self.code))


def _main(*args) -> int:
    from liverctl.cli import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code


@pytest.mark.parametrize("args", [["--help"], ["presets"], ["runs", "--json"]])
def test_a_stdout_that_fails_under_a_command_whose_product_it_is_is_one_line(args, tmp_path, monkeypatch, capsys):
    """`liverctl runs --help > /dev/full` ended in a 40-line traceback (`--help` and `--version` print outside
    any command's error boundary); `runs --json >&-` in an AttributeError traceback, `--help >&-` printed
    nothing and exited 0. A reader that went away (`| head -1`) is exit 1 without a word, as click has it."""
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "runs", "r")
    for stdout, code, said in [
        (_Failing(errno.ENOSPC), 2, "error: stdout: no space left on device; the output is incomplete"),
        (None, 2, "error: stdout is closed, so nothing could be printed; give it a file, or > /dev/null to drop it"),
        (_Failing(errno.EPIPE), 1, ""),
    ]:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert _main(*args) == code
        assert capsys.readouterr().err.strip() == said


def test_a_command_whose_product_is_on_disk_goes_on_when_stdout_and_stderr_fail(tmp_path, monkeypatch, capsys):
    """`liverctl synth d 2>&1 | true` stopped at its first line of progress: the test case written, the training
    cases not, exit 1. What it prints is only its log: the work goes on, exit 0; a full disk under stdout is
    one warning on stderr."""
    args = ["--cases", "2", "--test-cases", "1", "--size", "32", "--slices", "3", "--workers", "1"]
    monkeypatch.setattr(sys, "stdout", _Failing(errno.EPIPE))
    monkeypatch.setattr(sys, "stderr", _Failing(errno.EPIPE))
    assert _main("synth", tmp_path / "piped", *args) == 0
    assert len(list((tmp_path / "piped").rglob("*.nii.gz"))) == 2 * 2 + 2
    monkeypatch.undo()
    monkeypatch.setattr(sys, "stdout", _Failing(errno.ENOSPC))
    assert _main("synth", tmp_path / "full", *args) == 0
    assert len(list((tmp_path / "full").rglob("*.nii.gz"))) == 2 * 2 + 2
    err = capsys.readouterr().err
    bar, warning = err.splitlines()
    assert warning == "warning: stdout: no space left on device; liverctl carries on without printing there"


def test_a_training_goes_on_to_its_end_when_its_reader_goes_away(tiny_store, tmp_path, monkeypatch):
    """`liverctl train ... | head -1`: the run's first line went to head, the next raised BrokenPipeError and the
    run ended `failed` after its first epoch (with stderr the reader's too, `2>&1 | head -1`, likewise;
    `> /dev/full` before it began). Its product is the run folder: it completes, exit 0."""
    from train_fixtures import SMALL_MODEL

    from liverctl.runs.history import read_history

    monkeypatch.setattr(sys, "stdout", _Failing(errno.EPIPE))
    monkeypatch.setattr(sys, "stderr", _Failing(errno.EPIPE))
    sets = [x for s in (*SMALL_MODEL, "data.input_size=32", "train.steps_per_epoch=1", "data.max_val_cases=1")
            for x in ("--set", s)]
    assert _main("train", "-p", "demo", *sets, "--store", tiny_store, "--epochs", "1", "--device", "cpu",
                 "--runs-dir", tmp_path, "--name", "r") == 0
    assert read_history(tmp_path / "r" / "events.jsonl", []).run_end["status"] == "completed"


def test_what_the_stdout_encoding_lacks_is_escaped_not_a_traceback(tmp_path, monkeypatch):
    """A run folder whose name is not UTF-8 (b'\\xff': Python holds it as '\\udcff') under a strict UTF-8 stdout
    (macOS, en_US.UTF-8, PYTHONIOENCODING=utf-8), and `été` under PYTHONIOENCODING=ascii, were a
    UnicodeEncodeError traceback in `runs` and `watch`. The byte is printed as it is, as `ls` does; what ASCII
    lacks, as a backslash escape."""
    root = tmp_path / "runs"
    for name in ("été", "bad\udcffname"):
        make_run(root, name)
    for encoding, expected in [("utf-8", [b"bad\xffname", "été".encode()]), ("ascii", [b"bad\xffname", b"\\xe9t\\xe9"])]:
        for args in (["runs", root], ["watch", "bad\udcffname", "--runs-dir", root, "--once"]):
            raw = io.BytesIO()
            monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding=encoding, errors="strict"))
            assert _main(*args) == 0
            sys.stdout.flush()
            assert expected[0] in raw.getvalue()
            if args[0] == "runs":
                assert expected[1] in raw.getvalue()


def test_a_file_opened_under_a_closed_stdout_does_not_take_its_number(tmp_path, monkeypatch):
    """`liverctl train ... >&-`: Python starts with sys.stdout None and descriptor 1 free, so the first file
    opened (the run's lock, its events.jsonl) became descriptor 1, where anything written to stdout below
    Python (a library's C code, a worker process) would land. It gets /dev/null first; a command that prints
    nothing does not fail on it."""
    from liverctl.commands._common import standard_streams

    saved = os.dup(1)
    try:
        os.close(1)
        monkeypatch.setattr(sys, "stdout", None)
        with standard_streams(), open(tmp_path / "events.jsonl", "w") as events:
            fd = events.fileno()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert fd != 1


def test_a_width_in_the_environment_that_cannot_be_printed_at_is_not_used(tmp_path):
    """COLUMNS=0 (rich took it as 0 columns) printed nothing at all, exit 0; TERMINAL_WIDTH=abc made `--help` a
    ValueError traceback; COLUMNS=100000 padded each `--help` line to 100000 columns, COLUMNS=1 made `presets`
    a column of single letters. Either is read before any console exists, so in a process of its own."""
    import subprocess

    from liverctl.commands._common import MAX_COLUMNS, MIN_COLUMNS, usable_widths

    def run(env, *args):
        return subprocess.run([sys.executable, "-m", "liverctl", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120, env={**os.environ, **env})

    listed = run({"COLUMNS": "0", "TERMINAL_WIDTH": "abc"}, "presets")
    assert listed.returncode == 0 and "demo" in listed.stdout, listed.stdout + listed.stderr
    helped = run({"COLUMNS": "100000", "TERMINAL_WIDTH": "abc"}, "--help")
    assert helped.returncode == 0 and max(map(len, helped.stdout.splitlines())) <= MAX_COLUMNS, helped.stderr[-500:]
    for value, kept in [("0", None), ("abc", None), ("-5", None), ("1", str(MIN_COLUMNS)), ("100000", str(MAX_COLUMNS)),
                        ("120", "120")]:
        environ = {"COLUMNS": value}
        usable_widths(environ)
        assert environ.get("COLUMNS") == kept, value


def test_an_error_naming_a_file_with_control_characters_in_its_name_is_one_line(tmp_path):
    """A file name holding a newline (or ESC, or a right-to-left override) made the one error line two, or moved the
    cursor: each such character is now shown as its escape, the name otherwise whole."""
    name = tmp_path / "sub\nmission\x1b[2J\u202e.csv"
    result = _invoke("postprocess", name, tmp_path / "out.nii.gz")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "\x1b" not in result.stderr and "\u202e" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path}/sub\\nmission\\x1b[2J\\u202e.csv: ")


def test_user_text_in_markup_keeps_its_brackets_and_shows_control_characters_as_escapes():
    """`esc` is how every path, id and note from someone's files reaches rich markup (ingest's notes on their files,
    its dry run, the runs and evaluate tables): a newline in a file name started a new line, ESC reached the
    terminal."""
    from rich.console import Console

    console = Console(record=True, width=200, color_system=None)
    console.print(f"note: {esc('volume-a[b]c' + chr(10) + 'x' + chr(27) + '[2J.nii.gz')}", highlight=False)
    assert console.export_text() == "note: volume-a[b]c\\nx\\x1b[2J.nii.gz\n"
