"""`liverctl runs` (the experiment table) and `liverctl report` (curves, overlays, index.html)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import typer

from liverctl.commands._common import STDOUT, FileOrStdoutCommand, console, fail, guarded
from liverctl.device import DEVICE_HELP
from liverctl.narrow import print_cut, print_table, print_words
from liverctl.plural import agree, plural
from liverctl.printable import esc


def register(app: typer.Typer) -> None:
    app.command("runs", cls=FileOrStdoutCommand)(runs_command)
    app.command("report")(report_command)


def runs_command(
    runs_dir: Path = typer.Argument(None, metavar="RUNS_DIR", help="Folder of run folders (or one run folder); default: runs.",
                                    show_default=False),
    *,
    runs_dir_option: Path = typer.Option(None, "--runs-dir", help="RUNS_DIR as an option, as train, watch, "
                                         "submit and report take it."),
    sort: str = typer.Option("started", "--sort", help="name, preset, status, nan, epochs, best_epoch, "
                             "volume_dice, slice_dice, global_dice, wall, submitted, started, cv_mean (an experiment's) "
                             "or a dotted setting (numbers largest first, text A-Z; default: newest first)."),
    reverse: bool = typer.Option(False, "--reverse", help="Flip the sort order."),
    filters: list[str] = typer.Option([], "--filter", help="COLUMN=VALUE (also != > < >= <=; "
                                      "wildcards with =), e.g. preset=v5, status=completed, "
                                      "volume_dice>=0.9, loss.name=tversky. Repeatable. An experiment's fold "
                                      "runs are rows of their own: a fold run is listed, beneath its experiment, "
                                      "when it matches; an experiment when it or one of its fold runs does "
                                      "(data.fold=2: each experiment's fold 2)."),
    as_json: str = typer.Option(None, "--json", metavar="[FILE]", help="The rows as JSON: alone or '-' on stdout "
                                "(instead of the table), else written to FILE (the table printed as ever)."),
    as_csv: str = typer.Option(None, "--csv", metavar="[FILE]", help="The rows as CSV, as --json gives JSON "
                               "(an experiment's fold rows beneath it)."),
) -> None:
    """One row per run, newest first: the settings that differ between runs, status, best Dice, scores."""
    from liverctl.runs import table
    from liverctl.runs.summary import scan_runs

    with guarded():
        from liverctl.files import check_output_file, write_atomic

        if as_json == STDOUT and as_csv == STDOUT:
            fail("choose one of --json and --csv for stdout (give the other a file name)")
        if runs_dir is not None and runs_dir_option is not None and runs_dir != runs_dir_option:
            fail(f"two run folders given: {runs_dir} and --runs-dir {runs_dir_option}; give one")
        files = {option: Path(target) for option, target in (("--json", as_json), ("--csv", as_csv))
                 if target not in (None, STDOUT)}
        for option, path in files.items():  # `runs --json runs/` (the old flag before the folder) is refused here
            check_output_file(path, what="the rows", option=option, folder_hint=f"{option} takes a file name (alone: stdout); "
                              "the runs folder goes before it, or as --runs-dir")
        runs_dir = runs_dir or runs_dir_option or Path("runs")
        summaries = table.sort_runs(table.filter_runs(scan_runs(runs_dir), filters), sort, reverse=reverse)
        # Varied settings are judged among the runs listed, so a filter narrows the columns too.
        varied = table.varied_settings(summaries)
        rows = [table.summary_row(s, varied) for s in summaries]
        texts = {"--json": lambda: json.dumps(rows, indent=2) + "\n", "--csv": lambda: _csv_text(rows)}
        for option, path in files.items():
            write_atomic(path, texts[option](), what=f"the rows ({option})")
        if STDOUT in (as_json, as_csv):
            sys.stdout.write(texts["--json" if as_json == STDOUT else "--csv"]())
            return
        if not summaries:
            console.print(f"no runs in {esc(runs_dir)} match the {agree(len(filters), 'filter', 'filters')}")
        else:
            _print_table(summaries, varied, runs_dir, filtered=bool(filters))
        for option, path in files.items():
            console.print(f"rows written to {path} ({option})", markup=False, highlight=False)


def _csv_text(rows: list[dict]) -> str:
    """The rows as the table lists them: an experiment's fold rows beneath it (named `exp/fold-k`), every
    column any row has (an experiment's cv columns are blank in a run's row), lists and objects as JSON."""
    flat = []
    for row in rows:
        flat.append({k: v for k, v in row.items() if k != "folds"})
        flat.extend({**fold, "name": f"{row['name']}/{fold['name']}"} for fold in row.get("folds", []))
    if not flat:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for row in flat for k in row)), lineterminator="\n")
    writer.writeheader()
    for row in flat:
        writer.writerow({k: ("; ".join(v) if k == "problems" else json.dumps(v) if isinstance(v, (list, dict)) else v)
                         for k, v in row.items()})
    return out.getvalue()


STATUS_STYLES = {"completed": "green", "running": "cyan", "nan_abort": "red", "failed": "red"}


CV_HEADER = "folds: best vol"  # an experiment's per-fold best volume Dice (the legend explains it)


def _print_table(summaries, varied: list[str], runs_dir: Path, *, filtered: bool = False) -> None:
    """The table of `liverctl.runs.table` in rich: status coloured, NaN counts red, volume Dice bold."""
    from rich.table import Table
    from rich.text import Text

    from liverctl.experiment.summary import cv_text
    from liverctl.runs import table as spec

    columns = spec.columns(varied)
    experiments = any(s.kind == "experiment" for s in summaries)
    table = Table(title=f"runs in {esc(runs_dir)}", title_justify="left", header_style="bold")
    for c in columns:
        table.add_column(c.header, justify="right" if c.numeric else "left", overflow="fold")
    if experiments:
        table.add_column(CV_HEADER, justify="right")
    styles = {"status": lambda s: STATUS_STYLES.get(s.status, "yellow"), "volume_dice": lambda s: "bold",
              "nan": lambda s: "red" if s.nan_events else ""}
    headers = [c.header for c in columns] + ([CV_HEADER] if experiments else [])
    rows = []
    for s in spec.table_rows(summaries):
        row = [Text(text, style=styles[c.key](s) if c.key in styles else "")
               for c, text in zip(columns, spec.cells(s, varied), strict=True)]
        rows.append([*row, *([Text(cv_text(s) if s.kind == "experiment" else "")] if experiments else [])])
        table.add_row(*rows[-1])
    print_table(console, table, f"runs in {runs_dir}", headers, rows)
    print_words(console, spec.LEGEND, style="dim")
    if experiments:
        _print_experiment_notes(summaries, filtered)
    _print_endings(summaries)
    damaged = [s for s in spec.table_rows(summaries) if s.problems]
    if damaged:
        console.print(f"[yellow]{plural(len(damaged), 'run')} with something missing or odd:[/]")
        for s in damaged:  # on a narrow terminal broken between words (a path or number whole), indented beneath
            print_words(console, Text.assemble((s.name, "bold"), ": ", "; ".join(s.problems)), indent="  ", hang="    ")


def _print_endings(summaries) -> None:
    """One line per listed run (an experiment's fold runs included) that ended without completing, with why:
    `  v5-lr3e-3: nan_abort at step 812: <run_end's message>`, cut to the terminal. An interrupted run (no
    run_end) is not among them: its problem line says so."""
    from rich.text import Text

    from liverctl.runs.table import ended_text, table_rows

    ended = [(s, ended_text(s)) for s in table_rows(summaries) if s.ended_because is not None]
    if not ended:
        return
    console.print(f"[red]{plural(len(ended), 'run')} ended without completing:[/]")
    for s, (how, why) in ended:
        print_cut(console, [Text(f"{s.name.strip()}:", "bold"), Text(f"{how}:")], Text(why))


def _print_experiment_notes(summaries, filtered: bool = False) -> None:
    from liverctl.printable import QUOTE_LIMIT, one_line
    from liverctl.runs.history import finite
    from liverctl.runs.table import FILTER_RULE, format_dice

    print_words(console, "Experiments: epochs = folds x epochs per fold done/planned (5x0-20/20: its folds stand "
                "apart); vol/slice/global = pooled out-of-fold predictions (config threshold, no "
                "post-processing); folds: best vol = per-fold best volume Dice, mean +- std (folds); "
                "their fold runs beneath." + (f" {FILTER_RULE}" if filtered else ""), style="dim")
    for s in summaries:
        decision = (s.cv or {}).get("decision") if s.kind == "experiment" else None
        if decision:  # experiment.json is anyone's file: its values are shown, never trusted to be numbers
            threshold = finite(decision.get("threshold"))
            print_words(console, f"{s.name}: decided on {plural(decision.get('cases'), 'out-of-fold case')}: threshold "
                        f"{'-' if threshold is None else f'{threshold:g}'}, post {one_line(decision.get('post'), QUOTE_LIMIT)} "
                        f"(volume Dice {format_dice(finite(decision.get('volume_dice')))})", indent="  ", hang="    ")
            if decision.get("caution"):
                print_words(console, one_line(decision["caution"]), indent="    ", hang="    ", style="yellow")


def report_command(
    run_specs: list[str] = typer.Argument(..., metavar="RUN", help="Run or experiment folders, or their names under --runs-dir."),
    *,
    out: Path | None = typer.Option(None, "--out", "-o", help="Report folder (default: RUN/report for one, "
                                    "reports/<run>+<run>... beside the runs folder for several)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder holding the run folders: where names are looked up."),
    store: Path | None = typer.Option(None, "--store", help="Zarr store to predict the overlays from "
                                      "(default: each run's data.store)."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays",
                                  help="Predict the validation cases for overlays and per-case Dice."),
    max_cases: int = typer.Option(6, "--max-cases", min=1, help="Validation cases predicted per run for the overlays."),
    device: str = typer.Option("auto", "--device", help=f"{DEVICE_HELP} For the overlays."),
) -> None:
    """Training curves, per-case Dice, prediction overlays and an index.html for one or more runs."""
    from liverctl.report import build as report

    with guarded(log=True):
        from liverctl.experiment.tables import expand_report_specs

        run_dirs, experiments, named = expand_report_specs(run_specs, runs_dir)
        out_dir = out if out is not None else report.default_out_dir(named)

        def say_what_it_takes() -> None:  # once the runs and --out were found fit: not above a refusal
            if overlays:
                console.print(f"writing {esc(out_dir)}: predicting up to {plural(max_cases, 'validation case')} per "
                              "run for the overlays (minutes on a CPU; --no-overlays for curves only)", style="dim",
                              highlight=False)

        result = report.write_report(
            run_dirs, out_dir, overlays=overlays, store_path=store, max_cases=max_cases, device=device,
            experiments=experiments, on_start=say_what_it_takes,
        )
        for path in named:  # what each was, beside its report (never above a refusal of --out or of a run)
            if path in experiments:
                _print_experiment_options(path)
            else:
                _print_run_settings(path)
        console.print(f"report: {esc(result.index_html)}  ({plural(len(result.images), 'picture')})", highlight=False)
        for note in result.warnings:
            console.print(f"  [yellow]warning:[/] {esc(note)}", highlight=False)
        for note in result.skipped:
            console.print(f"  [yellow]skipped:[/] {esc(note)}", highlight=False)
        if result.refused:  # written without what a refused input would have given: not a clean success
            fail(f"report written without overlays: {result.refused[0]}"
                 + (f" (and {plural(len(result.refused) - 1, 'more run')})" if len(result.refused) > 1 else ""))


def _print_run_settings(run_dir: Path) -> None:
    """`run r1: settings beyond preset demo: data.input_size=64, train.epochs=1`, as report EXP says it of an
    experiment."""
    from rich.text import Text

    from liverctl.runs.summary import summarize_run
    from liverctl.runs.table import settings_beyond_preset

    summary = summarize_run(run_dir)
    print_words(console, Text.assemble(f"run {summary.name}: ", settings_beyond_preset(summary.preset, summary.settings)))


def _print_experiment_options(exp_dir: Path) -> None:
    """An experiment's headline, its settings beyond its preset, and its out-of-fold options' volume Dice as a grid
    (the chosen one marked): every option with its slice and global Dice too is in the report's index.html."""
    from rich.table import Table
    from rich.text import Text

    from liverctl.experiment.folder import read_summary
    from liverctl.experiment.tables import headline, option_grid, settings_text

    summary = read_summary(exp_dir)
    console.print(headline(summary, exp_dir), highlight=False, soft_wrap=True, markup=False)  # plain: '[bold]' as written
    print_words(console, settings_text(summary))
    head, rows = option_grid(summary)
    if rows:
        title = "out-of-fold options: volume Dice"
        table = Table(title=f"{title} (* = chosen; every figure in the report)", title_justify="left",
                      header_style="bold")
        for h in head:
            table.add_column(h, justify="left" if h == "post-processing" else "right")
        cells = [[Text(cell) for cell in row] for row in rows]  # a str cell is markup
        for row in cells:
            table.add_row(*row)
        print_table(console, table, title, head, cells)
