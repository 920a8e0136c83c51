"""What `watch`'s live state is made of: one record per epoch row, NaN record, step sample and checkpoint,
and where a non-finite value sits in an event. Pure Python."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Fields where `null` means "this number was not finite" (the writer's convention). Other fields may be
# null for ordinary reasons (no grad norm computed, no Dice in an interrupt checkpoint).
NUMBER_FIELDS: dict[str, tuple[str, ...]] = {
    "step": ("loss",),
    "epoch_end": ("train_loss", "val_loss", "volume_dice", "slice_dice", "global_dice"),
}


@dataclass
class EpochRow:
    """One `epoch_end` event; a None metric is a non-finite value (or was never written)."""

    epoch: int
    train_loss: float | None = None
    val_loss: float | None = None
    volume_dice: float | None = None
    slice_dice: float | None = None
    global_dice: float | None = None
    seconds: float | None = None
    is_best: bool = False  # the run's best epoch by the shared rule (`RunState.best`)
    ts: float | None = None
    nan_fields: set[str] = field(default_factory=set)  # columns holding a non-finite value
    nan_seen: bool = False  # a NaN record arrived during this epoch (step, grad or validation)
    step: int | None = None  # global step at its end (the event's, else the last step event seen)


@dataclass
class CurrentEpoch:
    """The epoch after the last `epoch_end`: what its step events and NaN records say so far."""

    number: int  # as the table would number it when it ends
    losses: list[float] = field(default_factory=list)  # finite step losses
    n_nan: int = 0  # NaN records during it
    started_ts: float | None = None

    @property
    def mean_loss(self) -> float | None:
        return sum(self.losses) / len(self.losses) if self.losses else None


@dataclass
class NanRecord:
    """A `nan` event, or a non-finite value found in another event (`from_value=True`)."""

    where: str
    action: str
    epoch: int | None
    step: int | None
    ts: float | None
    message: str = ""
    counts: dict[str, Any] = field(default_factory=dict)
    from_value: bool = False  # found in a value, no `nan` event seen (yet) for it
    # Which epoch of the run this happened in, counted from 1 by the epoch_end events seen before it: the
    # trainer's step-level events carry the epoch in progress from 0, its epoch_end the epochs done.
    epoch_ordinal: int | None = None


@dataclass
class StepSample:
    """One `step` event as the charts plot it; None where a value was missing or non-finite."""

    step: int | None
    ts: float | None
    loss: float | None
    lr: float | None
    samples_per_s: float | None


@dataclass
class Checkpoint:
    which: str
    path: str
    epoch: int | None
    volume_dice: float | None
    ts: float | None


def non_finite_paths(value: Any, path: str = "") -> list[str]:
    """Where a NaN/inf float sits in a parsed event (Python's json accepts `NaN` and `Infinity`)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [path]
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    # Every value of every event of a 100k-step log comes through here: a path is spelled only for a value
    # that is not finite or holds more values.
    found: list[str] = []
    for key, v in items:
        if isinstance(v, float) and math.isfinite(v) or not isinstance(v, (float, dict, list)):
            continue
        where = f"{path}[{key}]" if isinstance(value, list) else f"{path}.{key}" if path else str(key)
        found += non_finite_paths(v, where)
    return found
