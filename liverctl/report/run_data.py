"""A run as `liverctl report` sees it: its summary (`liverctl.runs.summary`), its events and its config text."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from liverctl.errors import LiverctlError
from liverctl.runs.events import read_events
from liverctl.runs.folder import CONFIG_FILE, EVENTS_FILE, is_run_dir
from liverctl.runs.summary import RunSummary, summarize_run


@dataclass
class RunData:
    """One run as the report sees it: its summary, events and config text."""

    path: Path
    summary: RunSummary
    events: list[dict]
    config_text: str

    @property
    def name(self) -> str:
        return self.summary.name


def load_run(run_dir: str | os.PathLike) -> RunData:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise LiverctlError("not a run folder (no events.jsonl or config.toml)", path=run_dir)
    summary = summarize_run(run_dir)
    try:
        config_text = (run_dir / CONFIG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        config_text = ""
    return RunData(run_dir, summary, read_events(run_dir / EVENTS_FILE), config_text)
