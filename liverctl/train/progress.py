"""One-line console progress for a training run (rich); events go to the file regardless."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from liverctl.pipe_progress import PipeProgress


class ConsoleProgress:
    """A single live line per epoch, then one summary line per finished epoch."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.console = console or Console(stderr=True, soft_wrap=True)  # a pipe is not cut at 80 columns
        self._progress: Progress | None = None
        self._task = None
        self._off_terminal: PipeProgress | None = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,  # off a terminal it left a blank line before each epoch's line
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, completed=done, info="")
        if not self.console.is_terminal:  # an epoch of hours in a notebook's log: its line now and then
            progress = self._progress
            self._off_terminal = PipeProgress(lambda: self.console.print(progress.get_renderable(), highlight=False))

    def step(self, loss: float, samples_per_s: float | None, lr: float) -> None:
        """`samples_per_s`: over the epoch's steps so far."""
        if self._progress is not None:
            rate = "—" if samples_per_s is None else f"{samples_per_s:.1f}"
            info = f"loss {loss:.4f}  {rate} samples/s  lr {lr:.2e}"  # as watch and bench name it
            self._progress.update(self._task, advance=1, info=info)
            if self._off_terminal is not None:
                self._off_terminal.tick()

    def validating(self, done: int, total: int) -> None:
        """After each validation batch. Off a terminal the line says how far the validation is, now and then (a
        large preset's is minutes, which wrote nothing); a terminal's line keeps saying "validating"."""
        if self._off_terminal is not None:
            self._progress.update(self._task, info=f"validating {done}/{total} batches")
            self._off_terminal.tick()

    def status(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, info=text)

    def end_epoch(self, epoch: int, epochs: int, m: dict, *, seconds: float, is_best: bool) -> None:
        self.close()
        if not self.enabled:
            return

        def f(v):
            return "nan" if v is None or not math.isfinite(v) else f"{v:.4f}"

        best = "  [green]best[/]" if is_best else ""
        self.console.print(
            f"epoch {epoch + 1}/{epochs}  train loss {f(m['train_loss'])}  val loss {f(m['val_loss'])}  "
            f"volume Dice {f(m['volume_dice'])}  slice Dice {f(m['slice_dice'])}  global Dice "
            f"{f(m['global_dice'])}  {seconds:.0f}s{best}",
            highlight=False,
        )

    def note(self, text: str) -> None:
        if self.enabled:
            (self._progress.console if self._progress else self.console).print(text, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._off_terminal = None
