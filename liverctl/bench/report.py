"""The figures of `liverctl bench`, their targets and verdicts, the printed table and the JSON.

A figure is a pair (liverctl, reference) with their ratio liverctl / reference. A figure with a target
(on the ratio, e.g. ">= 3" or "<= 0.5") gets a verdict: "met", "MISSED", or "not measured: <why>" (a
side missing, or a target that does not apply on this machine, e.g. the GPU row without a GPU).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.bench.context import BenchSettings, race
from liverctl.bench.timing import ratio
from liverctl.errors import LiverctlError
from liverctl.printable import quoted

JSON_FORMAT = "liverctl-bench/1"
MET, MISSED, NOT_MEASURED = "met", "MISSED", "not measured"


@dataclass
class Figure:
    """One row of the table: liverctl against a reference, with their ratio (liverctl / reference)."""

    key: str
    what: str
    unit: str
    reference: str  # what the reference column is: "baseline", "floor", "model only"
    higher_is_better: bool
    liverctl: float | None = None
    baseline: float | None = None  # the reference's value, whatever `reference` names
    ratio: float | None = None
    target: str | None = None  # e.g. ">= 1.8" on the ratio
    target_met: bool | None = None
    verdict: str | None = None  # MET, MISSED or "not measured: ..."; None without a target
    note: str | None = None
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def settle(self, not_measured: str | None = None) -> Figure:
        """Compute the ratio and judge the target; `not_measured` says why the target does not apply here."""
        self.ratio = ratio(self.liverctl, self.baseline)
        if not self.target:
            return self
        if not_measured is not None:
            self.verdict = f"{NOT_MEASURED}: {not_measured}"
        elif self.ratio is None:
            self.verdict = f"{NOT_MEASURED}: " + (self.note or "a side is missing")
        else:
            op, value = self.target.split()
            self.target_met = self.ratio >= float(value) if op == ">=" else self.ratio <= float(value)
            self.verdict = MET if self.target_met else MISSED
        return self


def race_into(fig: Figure, works: dict[str, Callable[[], Any]], repeats: int, *, warmup: int = 0,
              per: int = 1) -> None:
    """Time `works` in turns and put each side's median seconds (divided by `per`) into `fig`."""
    timings, failed = race(works, repeats, warmup=warmup)
    fig.note = failed or fig.note
    for side, t in timings.items():
        setattr(fig, side, t.median / per)
        fig.seconds[side] = t.seconds


@dataclass
class BenchReport:
    settings: BenchSettings
    figures: list[Figure]
    machine: dict
    started: str
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)  # diagnostics: where the time goes

    def to_json(self) -> dict:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.settings).items()}
        settings["only"] = list(self.settings.only)
        return {
            "format": JSON_FORMAT,
            "started": self.started,
            "seconds": self.seconds,
            "stage_seconds": self.stage_seconds,
            "profiles": self.profiles,
            "machine": self.machine,
            "settings": settings,
            "figures": {f.key: _figure_json(f) for f in self.figures},
        }


def _figure_json(fig: Figure) -> dict:
    out = asdict(fig)
    out.pop("key")
    for name in ("liverctl", "baseline", "ratio"):
        if out[name] is not None and not np.isfinite(out[name]):
            out[name] = None
    return out


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "bytes":
        return f"{value / 1e6:,.1f} MB"
    if unit in ("s", "s/slice"):
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:,.1f}"


# Short names for the printed table; the JSON and BENCHMARKS.md carry the full `what`.
TABLE_LABELS = {
    "ingest_seconds": "ingest vs notebook cache build",
    "ingest_vs_floor": "ingest vs read-and-decompress floor",
    "store_bytes": "bytes on disk, synthetic",
    "loader_augmented": "loader samples/s, augmented",
    "loader_read_only": "loader samples/s, no augmentation",
    "loader_cpu_per_sample": "worker CPU per sample, augmented on CPU",
    "loader_worker_cpu_device": "worker CPU per sample, augmented on device",
    "train_pipeline_vs_model": "training images/s: pipeline vs model only",
    "train_pipeline_vs_baseline": "training images/s: pipeline vs notebook",
    "postprocess_seconds": "largest-component clean-up",
    "rle_seconds": "RLE of every slice",
    "inference_seconds_per_slice": "inference per slice",
    "real_store_bytes": "bytes on disk, real CT",
    "real_window_reads": "window reads/s, real CT",
}
TABLE_HEADER = ["figure", "liverctl", "reference", "ratio", "target"]


def table_rows(report: BenchReport, long_names: bool = False) -> list[list[str]]:
    """One row per figure: figure, liverctl, reference, ratio (liverctl / reference), target: verdict."""
    rows = []
    for f in report.figures:
        name = f.what if long_names else TABLE_LABELS.get(f.key, f.what)
        unit = "" if f.unit in ("bytes", "s", "s/slice") else f" {f.unit}"
        mine = _fmt(f.liverctl, f.unit) + unit if f.liverctl is not None else "n/a"
        ref = _fmt(f.baseline, f.unit) + unit if f.baseline is not None else "n/a"
        ratio_text = f"{f.ratio:.2f}x" if f.ratio is not None else "n/a"
        target = "" if not f.target else f"{f.target}: {f.verdict or NOT_MEASURED}"
        rows.append([name, mine, f"{ref} ({f.reference})", ratio_text, target])
    return rows


def table_notes(report: BenchReport) -> list[str]:
    """`figure: note` for every figure that has one (why a value is missing, what a target means here)."""
    return [f"{TABLE_LABELS.get(f.key, f.key)}: {f.note}" for f in report.figures if f.note]


def report_markdown(report: BenchReport) -> str:
    """The table as Markdown (full figure descriptions) followed by the notes."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table_rows(report, True)]
    notes = table_notes(report)
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def report_from_json(data: dict) -> BenchReport:
    """A report read back from the JSON that `write_json` wrote (e.g. to render it as Markdown)."""
    if data.get("format") != JSON_FORMAT:
        raise LiverctlError(f"not a liverctl bench report (format {quoted(data.get('format'))}, expected {JSON_FORMAT!r})")
    settings = dict(data["settings"])
    settings["workdir"] = Path(settings["workdir"])
    settings["real_dir"] = Path(settings["real_dir"]) if settings.get("real_dir") else None
    if "only" in settings:
        settings["only"] = tuple(settings["only"])
    figures = [Figure(key=key, **fig) for key, fig in data["figures"].items()]
    return BenchReport(settings=BenchSettings(**settings), figures=figures, machine=data["machine"],
                       started=data["started"], seconds=data["seconds"], stage_seconds=data.get("stage_seconds", {}),
                       profiles=data.get("profiles", {}))


def report_json(report: BenchReport) -> str:
    """The report as the JSON text `--json` writes (a file, or stdout for '-')."""
    return json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n"


def write_json(report: BenchReport, path: Path) -> None:
    """Write the report atomically (`liverctl.files.write_atomic`)."""
    from liverctl.files import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, report_json(report), what="the bench figures")
