"""`python -m liverctl` works like the console script, worker processes included."""

from __future__ import annotations

import subprocess
import sys


def liverctl_module(*args, cwd):
    return subprocess.run([sys.executable, "-m", "liverctl", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_python_m_liverctl_runs_commands_with_worker_processes(tmp_path):
    listed = liverctl_module("--help", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "Usage: liverctl" in listed.stdout and "ingest" in listed.stdout
    made = liverctl_module("synth", "data", "--cases", "2", "--test-cases", "1", "--size", "32", "--slices", "4",
                           cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    # ingest's worker processes start from the forkserver under this main module
    ingested = liverctl_module("ingest", "data", "--store", "s.zarr", "--workers", "2", cwd=tmp_path)
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    assert "3 cases (2 train, 1 test" in ingested.stdout


def test_an_empty_argument_is_refused_before_it_means_the_current_folder(tmp_path, monkeypatch, capsys):
    """Typer took `''` for a path as `.`: `synth "$OUT"` with OUT unset began a 2 GB dataset in the current
    folder, `ingest "$DATA"` ingested it."""
    import pytest

    from liverctl.cli import main

    monkeypatch.chdir(tmp_path)
    for args, words in [
        (["synth", "", "--cases", "1", "--test-cases", "0", "--size", "32", "--slices", "2"],
         "the argument after 'synth' is empty"),
        (["ingest", "data", "--store="], "--store is given an empty value"),
        (["ingest", "data", "--store", ""], "--store is given an empty value"),
        (["runs", ""], "the argument after 'runs' is empty"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(args)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and words in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing written where '' would have pointed
    refused = liverctl_module("synth", "", cwd=tmp_path)  # `python -m liverctl` goes through the same check
    assert refused.returncode == 2 and "the argument after 'synth' is empty" in refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_version_prints_the_package_version_and_exits_0():
    from pathlib import Path

    import tomllib
    from typer.testing import CliRunner

    from liverctl import __version__
    from liverctl.cli import app

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert __version__ == pyproject["project"]["version"]
    for flag in ("--version", "-V"):
        result = CliRunner().invoke(app, [flag])
        assert result.exit_code == 0, result.output
        assert result.stdout == f"liverctl {__version__}\n"


def test_a_tilde_in_a_path_option_is_the_home_folder(tmp_path, monkeypatch):
    """`--runs-dir=~/runs` (bash leaves `~` after `--opt=` as typed; so does a quoted '~/x' or a script's
    argument list), a run given as ~/..., and a config's data.store of ~/x all mean the home folder."""
    import json

    from run_fixtures import make_run
    from typer.testing import CliRunner

    from liverctl.cli import app
    from liverctl.data.store import LiverStore

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "..")
    make_run(tmp_path / "my runs", "a")
    listed = CliRunner().invoke(app, ["runs", "~/my runs", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [row["name"] for row in json.loads(listed.stdout)] == ["a"]
    watched = CliRunner().invoke(app, ["watch", "--runs-dir=~/my runs", "~/my runs/a", "--once"])
    assert watched.exit_code == 0, watched.output
    assert LiverStore("~/s.zarr").path == tmp_path / "s.zarr"


def test_options_of_the_same_name_have_the_same_short_form():
    """`--out` is `-o` wherever it exists (report lacked it while submit had it)."""
    import typer

    from liverctl.cli import app

    group = typer.main.get_command(app)
    outs = {name: param.opts for name, command in group.commands.items() for param in command.params
            if "--out" in getattr(param, "opts", [])}
    assert set(outs) >= {"submit", "report"}
    assert all("-o" in opts for opts in outs.values()), outs


def test_a_summary_line_is_not_broken_at_80_columns_in_a_pipe(tmp_path):
    """Not a terminal (a pipe, a Kaggle notebook cell): rich assumed 80 columns and broke summary lines."""
    out = tmp_path / ("a-folder-with-a-long-name-" * 3) / "data"
    made = liverctl_module("synth", str(out), "--cases", "1", "--test-cases", "0", "--size", "32", "--slices", "3",
                           cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    (line,) = [text for text in made.stdout.splitlines() if text.strip()]
    assert line.startswith("wrote 1 training case and 0 test cases") and line.rstrip().endswith(" s")


def _commands():
    """(name, command) of every liverctl command and subcommand (Typer's own click: told apart by attributes)."""
    import typer.main

    from liverctl.cli import app

    todo = [("liverctl", typer.main.get_command(app))]
    while todo:
        name, command = todo.pop()
        if hasattr(command, "commands"):
            todo += [(f"{name} {sub}", c) for sub, c in command.commands.items()]
        else:
            yield name, command


def test_every_option_and_argument_says_what_it_is_under_one_name():
    """Every parameter has help; an argument shows in the usage line under the upper-case name the help texts
    call it by (`postprocess` said 'Allow TARGET to be SOURCE' over a usage of '{source} {target}', `report`
    showed '{RUN...}...')."""
    seen = 0
    for name, command in _commands():
        for param in command.params:
            if param.name == "help":
                continue
            seen += 1
            assert (getattr(param, "help", None) or "").strip(), f"{name}: {param.name} has no help"
            if param.param_type_name == "argument":
                metavar = param.metavar or ""
                assert metavar.isupper() and "." not in metavar, f"{name}: argument {param.name} shows as {metavar!r}"
    assert seen > 50


def test_every_command_help_breaks_only_between_paragraphs():
    """A docstring's line breaks reached `liverctl --help` as they were: `verify`'s description broke after 'a copy
    between machines' at any width but the source's. Each paragraph is one line now, wrapped by the terminal."""
    seen = 0
    for name, command in _commands():
        for paragraph in (command.help or "").split("\n\n"):
            seen += 1
            assert "\n" not in paragraph and paragraph == paragraph.strip(), f"{name}: {paragraph!r}"
    assert seen > 10


_EXIT_PROBE = """
import atexit, gc, sys
from liverctl.cli import main

class Cycle:  # garbage in a reference cycle, as a command may leave behind: its finalizer must still run
    def __del__(self):
        print("cycle finalized", flush=True)

def report():
    print("frozen", gc.get_freeze_count(), flush=True)

atexit.register(report)
gc.disable()  # the cycle stays garbage until the command's end
c = Cycle(); c.me = c; del c
main(sys.argv[1:])
"""


def test_a_command_that_succeeded_spares_the_exit_its_collections_a_failed_one_does_not(tmp_path):
    """Python's exit ran full collections over everything torch, timm and zarr had imported (~400,000 objects):
    2.5-4 s after a command's last line. A command that succeeded collects once and freezes what is left;
    the garbage it left behind is still finalized."""
    ok = subprocess.run([sys.executable, "-c", _EXIT_PROBE, "--version"], capture_output=True, text=True,
                        cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].startswith("liverctl ") and lines[1] == "cycle finalized", lines
    assert lines[2].startswith("frozen ") and int(lines[2].split()[1]) > 10_000, lines
    failed = subprocess.run([sys.executable, "-c", _EXIT_PROBE, "runs", str(tmp_path / "nothing")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert failed.returncode != 0 and "frozen 0" in failed.stdout.splitlines(), failed.stdout + failed.stderr


_ROOT = __import__("pathlib").Path(__file__).parents[1]
_USER_DOCS = ["README.md", "docs/store.md", "docs/kaggle.md"]


def _shown_commands():
    """(doc, line, command words, options) of every `liverctl ...` a user reads in the docs: the lines of code
    blocks and the inline code spans that start with liverctl (`!liverctl`, `python -m liverctl`, `torchrun ...
    -m liverctl.cli` too), a line ending in a backslash, or followed by an indented `[--option ...]`, joined
    with the next."""
    import re
    import shlex

    for doc in _USER_DOCS:
        text = (_ROOT / doc).read_text()
        in_block, pieces = False, []
        for line in text.splitlines():
            if line.startswith("```"):
                in_block = not in_block
                continue
            if in_block and pieces and line[:1] == " " and line.lstrip().startswith(("[--", "--")):
                pieces[-1] += " " + line
            else:
                pieces += [line] if in_block else re.findall(r"`((?:!|python -m )?liverctl [^`]*)`", line)
        joined = "\n".join(pieces).replace("\\\n", " ")
        for line in joined.splitlines():
            words = shlex.split(line.split(" #")[0].replace("[", " ").replace("]", " ").replace("|", " "),
                                posix=True) if "liverctl" in line else []
            starts = [i for i, w in enumerate(words)  # liverctl run, not installed (`pip install ... liverctl`)
                      if w.lstrip("!") in ("liverctl", "liverctl.cli") and (i == 0 or words[i - 1] == "-m")]
            if starts:
                rest = words[starts[0] + 1:]
                options = {w.split("=")[0] for w in rest if w.startswith("--")}
                yield doc, line.strip(), [w for w in rest if not w.startswith("-")], options


def test_the_docs_show_every_command_and_option_and_only_those_that_exist():
    """README's journey lists every command, README or docs/ (BENCHMARKS.md for bench, which README points to)
    says what each option does, and every `liverctl ...` line the docs show names a command that exists with
    options it takes: `liverctl verify` and `ingest --verify` were in no README line, `watch --plot`, `runs
    --sort/--filter`, `submit --threshold/--save-masks`, `report --no-overlays/--max-cases` and `train --device`
    nowhere."""
    import re

    import typer.main

    from liverctl.cli import app

    group = typer.main.get_command(app)
    readme = (_ROOT / "README.md").read_text()
    docs = "".join((_ROOT / doc).read_text() for doc in _USER_DOCS)
    missing = []
    for name, command in _commands():
        words = name.split()[1:]
        if not re.search(rf"liverctl {' '.join(words)}(?![\w-])", readme):
            missing.append(f"README: {name}")
        where = docs + ((_ROOT / "BENCHMARKS.md").read_text() if words == ["bench"] else "")
        for param in command.params:  # --overlays/--no-overlays: the one that is not the default will do
            opts = [o for o in param.opts + getattr(param, "secondary_opts", []) if o.startswith("--")]
            if opts and opts != ["--help"] and not any(re.search(rf"{re.escape(o)}(?![\w-])", where) for o in opts):
                missing.append(f"{name} {'/'.join(opts)}")
    assert not missing, f"not in README / docs: {missing}"

    shown = 0
    for doc, line, words, options in _shown_commands():
        command = group
        while hasattr(command, "commands") and words and words[0] in command.commands:
            command, words = command.commands[words.pop(0)], words
        assert command is not group or options == {"--help"}, f"{doc}: no such command: {line}"
        takes = {"--help"} | {opt for p in command.params for opt in p.opts + getattr(p, "secondary_opts", [])}
        assert options <= takes, f"{doc}: {sorted(options - takes)} not an option of: {line}"
        shown += 1
    assert shown > 40
