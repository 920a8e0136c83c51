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


def test_off_a_terminal_an_epoch_writes_its_line_now_and_then(monkeypatch):
    """`!liverctl train` in a notebook cell: an epoch of the large presets (1.5 to 2 hours on a Kaggle GPU) wrote
    nothing between two epoch lines. Its progress line is now written every `pipe_progress.EVERY_SECONDS` (0
    here: after every step); within the interval, nothing."""
    import liverctl.pipe_progress

    out = io.StringIO()
    progress = ConsoleProgress(console=Console(file=out, force_terminal=False, width=160))
    progress.start_epoch(0, 3, steps=8)
    progress.step(0.5, 12.34, 1e-4)
    progress.close()
    assert out.getvalue() == ""
    monkeypatch.setattr(liverctl.pipe_progress, "EVERY_SECONDS", 0.0)
    progress.start_epoch(1, 3, steps=8)
    progress.step(0.5, 12.34, 1e-4)
    progress.step(0.25, 12.34, 1e-4)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 2/3") and " 1/8 " in lines[0], out.getvalue()
    assert " 2/8 " in lines[1] and "loss 0.2500  12.3 samples/s" in lines[1]


def test_off_a_terminal_the_validation_says_how_far_it_is(monkeypatch):
    """A large preset's validation is minutes, after which the epoch line came: off a terminal nothing was
    written meanwhile (its batches ticked no line). After each validation batch the line now says how far it is,
    now and then (every batch here); a terminal's line keeps saying "validating", as it did."""
    import liverctl.pipe_progress

    monkeypatch.setattr(liverctl.pipe_progress, "EVERY_SECONDS", 0.0)
    out = io.StringIO()
    progress = ConsoleProgress(console=Console(file=out, force_terminal=False, width=160))
    progress.start_epoch(0, 3, steps=8, done=8)
    progress.status("validating")
    progress.validating(1, 5)
    progress.validating(2, 5)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("epoch 1/3") and " 8/8 " in line for line in lines), lines
    assert "validating 1/5 batches" in lines[0] and "validating 2/5 batches" in lines[1]
    terminal = ConsoleProgress(console=Console(file=io.StringIO(), force_terminal=True, width=160))
    terminal.start_epoch(0, 3, steps=8, done=8)
    try:
        terminal.status("validating")
        terminal.validating(1, 5)
        assert _info(terminal) == "validating"
    finally:
        terminal.close()
