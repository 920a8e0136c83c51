"""`liverctl bench`: liverctl against the notebook baseline, side by side, in one run."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.commands._common import console, guarded


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)


def bench_command(
    cases: int = typer.Option(None, "--cases", help="Synthetic training cases (default 4; --quick 2)."),
    size: int = typer.Option(None, "--size", help="Slice size in pixels, also the model input (default 512)."),
    slices: int = typer.Option(None, "--slices", help="Slices per case (default 64; --quick 16)."),
    quick: bool = typer.Option(False, "--quick", help="A tiny run (2 cases of 64x64x16) that checks the "
                               "benchmark works, in well under a minute; its figures mean little."),
    json_path: Path = typer.Option(None, "--json", help="Also write every figure to this JSON file."),
    workdir: Path = typer.Option(Path("bench-work"), "--workdir",
                                 help="Where the synthetic data, store and .npy cache are written (reused)."),
    real: bool = typer.Option(True, "--real/--no-real", help="Also measure store size and reads on the real "
                              "CT in ../shared/data/real (or $LIVERCTL_REAL_DATA)."),
    real_dir: Path = typer.Option(None, "--real-dir", help="The real CT folder, if not the default."),
) -> None:
    """Measure ingest, loading, training and submit-side costs against the notebook pipeline."""
    with guarded():
        from rich.table import Table

        from liverctl.bench.run import (
            TABLE_HEADER,
            BenchSettings,
            run_bench,
            table_notes,
            table_rows,
            write_json,
        )

        overrides = dict(cases=cases, size=size, slices=slices, workdir=workdir, real=real, real_dir=real_dir)
        settings = (BenchSettings.quick_settings(**overrides) if quick else
                    BenchSettings(**{k: v for k, v in overrides.items() if v is not None}))
        with console.status("benchmarking") as status:
            report = run_bench(settings, on_stage=lambda stage: status.update(f"benchmarking: {stage}"))
        table = Table(title=f"liverctl bench: {settings.cases} cases of {settings.size}x{settings.size}x"
                      f"{settings.slices}, {report.machine['cpus']} CPUs, {report.machine['device']}, "
                      f"median of {settings.repeats}")
        for name in TABLE_HEADER:
            table.add_column(name, overflow="fold")
        for row in table_rows(report):
            table.add_row(*row)
        console.print(table)
        console.print(f"ratio = liverctl / reference, medians of {settings.repeats} repeats; "
                      f"{report.seconds:.0f} s in all", highlight=False)
        for note in table_notes(report):
            console.print(f"  {note}", highlight=False, soft_wrap=True, markup=False)
        breakdown = report.profiles.get("loader_cpu_ms_per_sample", {})
        for side, parts in breakdown.items():
            if isinstance(parts, dict):
                text = ", ".join(f"{name} {ms:.2f}" for name, ms in parts.items())
                console.print(f"  loader CPU ms per sample, {side}: {text}", highlight=False, soft_wrap=True)
        if json_path is not None:
            write_json(report, json_path)
            console.print(f"figures written to {json_path}", markup=False)
