"""The trainer's console progress line (liverctl/train/progress.py)."""

from __future__ import annotations

import io

from rich.console import Console

from liverctl.train.progress import ConsoleProgress


def _info(progress: ConsoleProgress) -> str:
    return progress._progress.tasks[0].fields["info"]


def test_the_progress_line_names_the_rate_as_watch_does():
    """The line said "12.3 img/s" where watch's header and bench say samples/s of the same figure (a sample is a
    2.5D stack of slices, not an image); before the epoch's first step the rate is "—", not "0.0"."""
    progress = ConsoleProgress(console=Console(file=io.StringIO(), force_terminal=True, width=160))
    progress.start_epoch(0, 3, steps=8)
    try:
        progress.step(0.5, 12.34, 1e-4)
        assert _info(progress) == "loss 0.5000  12.3 samples/s  lr 1.00e-04"
        progress.step(0.5, None, 1e-4)
        assert _info(progress) == "loss 0.5000  — samples/s  lr 1.00e-04"
    finally:
        progress.close()
