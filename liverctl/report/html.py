"""The report's `index.html`: the runs table (`liverctl.runs.table`, as `liverctl runs` shows it), the
pictures, notable events and each run's config. Every string from a run folder (names, settings, messages,
config text, case ids, paths) goes through `html.escape`: logs and configs are shared, untrusted input."""

from __future__ import annotations

from html import escape
from pathlib import Path

from liverctl.printable import one_line
from liverctl.report.plots import ERROR_MAP_WORDS, LINE_WORDS
from liverctl.report.predictions import RunPredictions
from liverctl.report.run_data import RunData
from liverctl.runs import table

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.skipped { color: #8a5a00; } .problem { color: #a00; }
"""
# A message (anyone's text) in the events table: one line, long enough for any message liverctl writes.
REPORT_MESSAGE_LIMIT = 2000


def html_table(head, rows, numeric=()) -> str:
    """A table of escaped text; columns whose index is in `numeric` are right-aligned."""
    out = ["<table><tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td class='num'>{escape(str(c))}</td>" if i in numeric
                                    else f"<td>{escape(str(c))}</td>" for i, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def html_list(items, css_class: str) -> str:
    return "<ul>" + "".join(f"<li class='{css_class}'>{item}</li>" for item in items) + "</ul>"


def runs_table_html(data: list[RunData]) -> str:
    summaries = [r.summary for r in data]
    varied = table.varied_settings(summaries)
    columns = table.columns(varied)
    numeric = {i for i, c in enumerate(columns) if c.numeric}
    return (html_table([c.header for c in columns], [table.cells(s, varied) for s in summaries], numeric)
            + f"<p>{escape(table.LEGEND)}</p>")


def experiment_html(exp_dir) -> str:
    """An experiment's headline, fold table and out-of-fold option table."""
    from liverctl.experiment.folder import read_summary
    from liverctl.experiment.tables import (
        FOLD_HEAD,
        OPTION_HEAD,
        fold_rows,
        headline,
        option_rows,
        settings_text,
    )

    summary = read_summary(exp_dir)
    parts = [f"<h2>Cross-validation: {escape(str(summary.get('name')))}</h2><p>{escape(headline(summary, exp_dir))}</p>",
             f"<p>{escape(settings_text(summary))}</p>", html_table(FOLD_HEAD, fold_rows(summary))]
    rows = option_rows(summary)
    if rows:
        parts.append("<h3>Out-of-fold options (pooled over every held-out case; * = chosen)</h3>")
        parts.append(html_table(OPTION_HEAD, rows))
    return "\n".join(parts)


def write_index(data: list[RunData], predictions: dict[str, RunPredictions], skipped: list[str], path: Path,
                *, with_case_dice: bool, experiments=()) -> Path:
    """index.html beside the pictures (relative links, so the folder can be moved or zipped)."""
    title = "liverctl report: " + ", ".join(r.name for r in data)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>", runs_table_html(data)]
    if experiments:
        parts.extend(experiment_html(e) for e in experiments)
    problems = [f"<b>{escape(r.name)}</b>: {escape(p)}" for r in data for p in r.summary.problems]
    if problems:
        parts.append("<h2>Missing or odd</h2>" + html_list(problems, "problem"))
    if skipped:
        parts.append("<h2>Skipped</h2>" + html_list([escape(s) for s in skipped], "skipped"))
    parts.append("<h2>Training curves</h2><img src='curves.png' alt='training curves'>")
    parts.extend(_notable_events_html(data))
    if with_case_dice:
        parts.append("<h2>Volume Dice per validation case</h2><img src='case_dice.png' alt='per-case Dice'>")
    for run in data:
        parts.extend(_predictions_html(run, predictions.get(run.name), path.parent))
    parts.append("<h2>Config</h2>")
    for run in data:
        text = run.config_text or "(no config.toml in this run folder)"
        parts.append(f"<details open><summary>{escape(run.name)}: {escape(str(run.path))}/config.toml</summary>"
                     f"<pre>{escape(text)}</pre></details>")
    parts.append("</body></html>\n")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


SLICES_SHOWN = "the slice with the most liver, then those where label and prediction disagree most"


def _predictions_html(run: RunData, predicted: RunPredictions | None, root: Path) -> list[str]:
    results = [c for c in predicted.cases if c.overlay is not None] if predicted else []
    if not results:
        return []
    parts = [f"<h2>Predictions of {escape(run.name)}: {SLICES_SHOWN}</h2>"
             f"<p>{escape(predicted.how)}. Middle column: outlines of the {LINE_WORDS}. Right column: "
             f"{ERROR_MAP_WORDS}.</p>"]
    for c in sorted(results, key=lambda c: c.dice):
        rel = c.overlay.relative_to(root).as_posix()
        parts.append(f"<h3>{escape(c.case)}: volume Dice {c.dice:.4f}, slices {', '.join(map(str, c.slices))}"
                     f"</h3><img src='{escape(rel)}' alt='{escape(c.case)} overlay'>")
    return parts


def _notable_events_html(data: list[RunData]) -> list[str]:
    """A table of the NaN guard's actions, notes and end messages of each run (what curves cannot say)."""
    rows = []
    for run in data:
        for e in run.curves.notable:  # the first MAX_NOTABLE_EVENTS
            rows.append((run.name, e.get("kind"), one_line(e.get("epoch"), 40), one_line(e.get("step"), 40),
                         one_line(e.get("action") or e.get("status"), 100),  # anyone's text: one line, cut
                         one_line(e.get("message") or e.get("where"), REPORT_MESSAGE_LIMIT)))
        if run.curves.notable_count > len(run.curves.notable):
            more = run.curves.notable_count - len(run.curves.notable)
            rows.append((run.name, "", "", "", "", f"... {more} more in events.jsonl"))
    if not rows:
        return []
    head = ("run", "event", "epoch", "step", "action / status", "message")
    return ["<h2>NaN guard, notes and end messages</h2>", html_table(head, rows, numeric={2, 3})]
