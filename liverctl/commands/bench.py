"""`liverctl bench`: liverctl against the notebook baseline, side by side, in one run."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.commands._common import STDOUT, FileOrStdoutCommand, console, err_console, guarded


def register(app: typer.Typer) -> None:
    app.command("bench", cls=FileOrStdoutCommand)(bench_command)


def bench_command(
    *,
    cases: int = typer.Option(None, "--cases", help="Synthetic training cases (default 4; --quick 2)."),
    size: int = typer.Option(None, "--size", help="Slice size in pixels, also the model input (default 512; --quick 64)."),
    slices: int = typer.Option(None, "--slices", help="Slices per case (default 64; --quick 16)."),
    quick: bool = typer.Option(False, "--quick", help="A tiny run (2 cases of 64x64x16) that checks the "
                               "benchmark works, in well under a minute; its figures mean little."),
    only: str = typer.Option(None, "--only", help="Measure only these parts, comma-separated: ingest, loader, "
                             "training, submit, real (default: all)."),
    json_path: Path = typer.Option(None, "--json", metavar="[FILE]", help="Also write every figure to FILE as "
                                   "JSON; alone or '-': on stdout, alone there (the table then goes to stderr)."),
    workdir: Path = typer.Option(Path("bench-work"), "--workdir",
                                 help="Where the synthetic data, store and .npy cache are written (reused)."),
    real: bool = typer.Option(True, "--real/--no-real", help="Also measure store size and reads on the real "
                              "CT in ../shared/data/real (or $LIVERCTL_REAL_DATA)."),
    real_dir: Path = typer.Option(None, "--real-dir", help="The real CT folder, if not the default."),
) -> None:
    """Measure ingest, loading, training and submit-side costs against the notebook pipeline."""
    with guarded():
        from liverctl.bench.context import BenchSettings, parse_only
        from liverctl.bench.report import report_json, write_json
        from liverctl.bench.run import run_bench

        to_stdout = json_path is not None and str(json_path) == STDOUT
        if json_path is not None and not to_stdout:  # before the minutes of measuring, not after
            from liverctl.files import check_output_file

            check_output_file(json_path, what="the bench figures", option="--json", folder_hint="--json takes a file name, e.g. bench.json")
        overrides = dict(cases=cases, size=size, slices=slices, workdir=workdir, real=real, real_dir=real_dir,
                         only=parse_only(only))
        settings = (BenchSettings.quick_settings(**overrides) if quick else
                    BenchSettings(**{k: v for k, v in overrides.items() if v is not None}))
        with err_console.status("benchmarking") as status:
            report = run_bench(settings, on_stage=lambda stage: status.update(f"benchmarking: {stage}"))
        _print_report(report, err_console if to_stdout else console)
        if to_stdout:
            typer.echo(report_json(report), nl=False)
        elif json_path is not None:
            write_json(report, json_path)
            console.print(f"figures written to {json_path}", markup=False)


def _print_report(report, console) -> None:
    """The table, its notes and the loader's CPU breakdown, on `console`."""
    from rich.table import Table

    from liverctl.bench.report import TABLE_HEADER, table_notes, table_rows

    s = report.settings
    table = Table(title=f"liverctl bench: {s.cases} cases of {s.size}x{s.size}x{s.slices}, "
                  f"{report.machine['cpus']} CPUs, {report.machine['device']}, median of {s.repeats}")
    for name in TABLE_HEADER:
        table.add_column(name, overflow="fold")
    for row in table_rows(report):
        table.add_row(*row)
    console.print(table)
    console.print(f"ratio = liverctl / reference, medians of {s.repeats} repeats; {report.seconds:.0f} s in all; "
                  f"load average at the end {report.machine.get('load_average')}", highlight=False)
    for note in table_notes(report):
        console.print(f"  {note}", highlight=False, soft_wrap=True, markup=False)
    profiles = {"loader_cpu_ms_per_sample": "loader CPU ms per sample, one thread",
                "loader_epoch_cpu_ms_per_sample": "loader CPU ms per sample over whole epochs"}
    for key, title in profiles.items():
        for part, values in report.profiles.get(key, {}).items():
            if isinstance(values, dict):
                text = ", ".join(f"{name} {ms:.2f}" for name, ms in values.items())
                console.print(f"  {title}, {part}: {text}", highlight=False, soft_wrap=True)
