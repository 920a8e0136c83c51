"""What the charts of `watch` plot, as plain data: series, NaN marks, axes. No Textual, no plotext import.

`ChartSpec`s are built from one or several `RunState`s (several runs overlaid: a list of run folders, the
folds of an experiment once they exist) and the user's `ChartSettings`; `draw(plt, spec)` puts a spec on a
plotext figure (the TUI's `PlotextPlot.plt`, or a bare figure for `watch --plot`). Tests assert on specs.
"""

from __future__ import annotations

import math
import re
import weakref
from bisect import bisect_left
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from liverctl.runs.events import NO_STEP_EVENTS
from liverctl.runs.history import PLOTTABLE
from liverctl.watch.records import StepSample
from liverctl.watch.state import RunState

# Smoothing weights the `s` key steps through (TensorBoard's slider: debiased exponential moving average).
SMOOTHING = (0.0, 0.6, 0.8, 0.9, 0.95, 0.99)
X_AXES = ("step", "time")  # global step, or time since the run's start (TensorBoard's "relative")
# What plotext draws grows with the points it is given. A step curve of a long log (100k steps) keeps its
# envelope (`LiveEnvelope`) over SPEC_COLUMNS .. 2 x SPEC_COLUMNS columns of its own x range (at most 4 points
# each), kept up as the log grows: a spike or dip stays, within 1/SPEC_COLUMNS of the range of where it was (a
# chart's pixel columns, a few hundred, each hold several). `draw` reduces it again to the chart's own columns
# (`envelope`). Smoothing uses every point.
SPEC_COLUMNS = 1000
DICE_METRICS = (("volume_dice", "volume"), ("slice_dice", "slice"), ("global_dice", "global"))
# One colour per run when several are overlaid (plotext colour names), and the NaN marks per guard action.
RUN_COLORS = ("cyan+", "orange+", "green+", "magenta+", "blue+", "white", "gray+", "cyan")
NAN_MARKS = {  # action -> (marker, colour, legend label); colours: plotext names or xterm-256 numbers
    "skip_step": ("x", "red", "NaN: skipped"),
    "rollback": ("R", 208, "NaN: rollback"),
    "abort": ("A", "red+", "NaN: abort"),
    "report": ("?", "magenta+", "NaN: value"),
}


@dataclass
class ChartSettings:
    """What the user set with keys; kept when the shown runs change."""

    smoothing: float = 0.6
    x_axis: str = "step"
    show_raw: bool = True

    def next_smoothing(self) -> None:
        later = [w for w in SMOOTHING if w > self.smoothing]
        self.smoothing = later[0] if later else SMOOTHING[0]

    def next_x_axis(self) -> None:
        self.x_axis = X_AXES[(X_AXES.index(self.x_axis) + 1) % len(X_AXES)] if self.x_axis in X_AXES else "step"


@dataclass
class Series:
    label: str | None  # None: no legend entry
    xs: list[float]
    ys: list[float]
    color: str | int
    scatter: bool = False
    marker: str = "braille"


@dataclass
class ChartSpec:
    title: str
    xlabel: str
    series: list[Series] = field(default_factory=list)
    vlines: list[tuple[float, str | int]] = field(default_factory=list)  # (x, colour): rollbacks and aborts
    integer_x: bool = True  # steps and epochs: ticks on whole numbers
    empty: str = "no data yet"

    @property
    def has_data(self) -> bool:
        return any(s.xs for s in self.series)

    def named(self, label: str) -> Series:
        """The series with this legend label (KeyError when absent): for tests and `--plot` captions."""
        for s in self.series:
            if s.label == label:
                return s
        raise KeyError(label)


# ---- numbers ---------------------------------------------------------------------------------------------


def ema(values: list[float | None], weight: float) -> list[float | None]:
    """TensorBoard's smoothing: a debiased exponential moving average that steps over missing points."""
    return ema_on(values, weight)[0]


def ema_on(values: list[float | None], weight: float, after: tuple[float, int] = (0.0, 0),
           ) -> tuple[list[float | None], tuple[float, int]]:
    """`ema` of `values` going on from `after` (what it returned for the values before them: the same figures as
    `ema` of all of them), and where it ended."""
    out: list[float | None] = []
    last, n = after
    for v in values:
        if v is None:
            out.append(None)
            continue
        n += 1
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n) if weight > 0 else v)
    return out, (last, n)


def envelope(xs: list[float], ys: list[float], columns: int, lo: float | None = None, hi: float | None = None,
             *, cell: int = 1) -> tuple[list[float], list[float]]:
    """The points of a line that show what the whole line shows on `columns` pixel columns across [lo, hi]
    (default: the line's own x range), taken `cell` columns at a time (2: a braille character): of each run
    of points in one cell its first, lowest, highest and last, in their order (M4); at most 4 remain a cell.

    Within a cell the line covers the span between its lowest and highest point and enters and leaves it at
    its first and last, so a spike, a dip and the last point are drawn where they were:
    with `cell=1` plotext draws the same pixels as for the whole line, with `cell=2` the same rows of each
    character (a dot may sit in its other half). Columns are plotext's own (`_column`).
    Points in x order (a step or time axis) are split at C speed.
    """
    idx = envelope_index(xs, ys, columns, lo, hi, cell=cell)
    return (xs, ys) if idx is None else ([xs[i] for i in idx], [ys[i] for i in idx])


def envelope_index(xs: list[float], ys: list[float], columns: int, lo: float | None = None, hi: float | None = None,
                   *, cell: int = 1) -> list[int] | None:
    """`envelope`'s points as indices into `xs` and `ys`, in order; None: all of them."""
    n, cells = len(xs), -(-columns // cell)
    if n <= 4 * cells or columns < 2:
        return None
    lo = min(xs) if lo is None else lo
    hi = max(xs) if hi is None else hi
    if hi <= lo:
        return None
    scale = (columns - 1) / (hi - lo)
    if xs == sorted(xs):  # C speed; a log's steps and times are in order
        starts = [0]
        for c in range(cell, columns, cell):  # the first point of column c and on: near where plotext puts
            i = max(starts[-1], min(n, bisect_left(xs, lo + (c - 0.5) / scale)))  # it, then exactly there
            while i > starts[-1] and _column(xs[i - 1], lo, scale) >= c:
                i -= 1
            while i < n and _column(xs[i], lo, scale) < c:
                i += 1
            starts.append(i)
        starts.append(n)
    else:  # runs of consecutive points in one cell
        at = [_column(x, lo, scale) // cell for x in xs]
        starts = [0, *(i for i in range(1, n) if at[i] != at[i - 1]), n]
    return _extremes(ys, starts)


def _extremes(ys: list[float], starts: list[int]) -> list[int]:
    """Of each run `ys[starts[k]:starts[k + 1]]` the indices of its first, lowest, highest and last value."""
    idx: list[int] = []
    for a, b in zip(starts, starts[1:], strict=False):
        if b - a <= 4:
            idx.extend(range(a, b))
            continue
        idx.extend(sorted(set(_m4(ys, a, b))))
    return idx


class LiveEnvelope:
    """The drawable points of a line that grows at its end (a live log's steps, on one x axis), and its
    `envelope` over SPEC_COLUMNS .. 2 x SPEC_COLUMNS columns of its x range, both kept between versions of its
    state: `add` folds only the new points. The columns are buckets of x whose width is a power of two, twice as
    wide (two merged into one: first of the first, last of the second, the lower low and higher high, the
    earlier on a tie, as `envelope` picks them) whenever the line grows past 2 x SPEC_COLUMNS of them, so a
    spike stays within 1/SPEC_COLUMNS of the range of where it was. A line whose x goes back (not a log's
    steps or times) is reduced anew with `envelope` when asked."""

    def __init__(self) -> None:
        self.xs: list[float] = []  # the drawable points (`_finite_pairs`), all of them
        self.ys: list[float] = []
        self.high: float | None = None  # the highest y
        self.in_order = True
        self._lo = 0.0
        self._width: float | None = None  # of a bucket; None: not reduced yet (few points so far)
        self._buckets: list[list[int] | None] = []  # [first, lowest, highest, last] indices, by bucket of x

    def add(self, xs: list[float | None], ys: list[float | None]) -> None:
        xs, ys = _finite_pairs(xs, ys)
        if not xs:
            return
        if (self.xs and xs[0] < self.xs[-1]) or xs != sorted(xs):
            self.in_order = False
        start = len(self.xs)
        self.xs += xs
        self.ys += ys
        high = max(ys)
        self.high = high if self.high is None else max(self.high, high)
        if self._width is not None and self.in_order:
            for i in range(start, len(self.xs)):
                self._fold(i)

    def indices(self) -> list[int] | None:
        """The points to draw, as indices into `xs` and `ys`, in order; None: all of them."""
        n = len(self.xs)
        if n <= 4 * SPEC_COLUMNS:
            return None
        if not self.in_order:
            return envelope_index(self.xs, self.ys, SPEC_COLUMNS)
        if self._width is None:
            self._start()
        return [i for bucket in self._buckets if bucket for i in sorted(set(bucket))]

    def points(self) -> tuple[list[float], list[float]]:
        idx = self.indices()
        if idx is None:
            return list(self.xs), list(self.ys)
        return [self.xs[i] for i in idx], [self.ys[i] for i in idx]

    def _start(self) -> None:
        """The buckets of all points so far (x in order), split at C speed."""
        xs, ys = self.xs, self.ys
        self._lo, span = xs[0], xs[-1] - xs[0]
        self._width = math.ldexp(1.0, math.ceil(math.log2(span / (2 * SPEC_COLUMNS)))) if span > 0 else 1.0
        count = math.floor(span / self._width) + 1
        starts = [0, *(bisect_left(xs, self._lo + k * self._width) for k in range(1, count)), len(xs)]
        self._buckets = [None if a == b else _m4(ys, a, b) for a, b in zip(starts, starts[1:], strict=False)]
        while len(self._buckets) > 2 * SPEC_COLUMNS:
            self._halve()

    def _fold(self, i: int) -> None:
        k = max(len(self._buckets) - 1, math.floor((self.xs[i] - self._lo) / self._width))
        while k >= 2 * SPEC_COLUMNS:
            self._halve()
            k = max(len(self._buckets) - 1, math.floor((self.xs[i] - self._lo) / self._width))
        self._buckets += [None] * (k + 1 - len(self._buckets))
        bucket, y = self._buckets[k], self.ys[i]
        if bucket is None:
            self._buckets[k] = [i, i, i, i]
            return
        if y < self.ys[bucket[1]]:
            bucket[1] = i
        if y > self.ys[bucket[2]]:
            bucket[2] = i
        bucket[3] = i

    def _halve(self) -> None:
        """Buckets twice as wide: each pair merged into one."""
        ys, old = self.ys, self._buckets
        merged: list[list[int] | None] = []
        for k in range(0, len(old), 2):
            a, b = old[k], old[k + 1] if k + 1 < len(old) else None
            if a is None or b is None:
                merged.append(a or b)
                continue
            merged.append([a[0], a[1] if ys[a[1]] <= ys[b[1]] else b[1], a[2] if ys[a[2]] >= ys[b[2]] else b[2], b[3]])
        self._buckets, self._width = merged, self._width * 2


def _m4(ys: list[float], a: int, b: int) -> list[int]:
    """The indices of the first, lowest, highest and last of `ys[a:b]` (the earliest on a tie), at C speed."""
    part = ys[a:b]
    return [a, a + part.index(min(part)), a + part.index(max(part)), b - 1]


def _column(x: float, lo: float, scale: float) -> int:
    """The pixel column plotext draws `x` in (`plotext._utility.get_matrix_data`; scale: (columns - 1) / (hi - lo))."""
    return math.floor(round(0.5 + scale * (x - lo), 8))


def _finite_pairs(xs: list[float | None], ys: list[float | None]) -> tuple[list[float], list[float]]:
    """The (x, y) points that can be drawn (`liverctl.runs.history.plottable`: an absurd value in someone's
    events.jsonl, such as 1e308, on which plotext overflows, stays in the epoch table but not on the chart)."""
    # Inline comparisons, not `plottable` per value: a long log holds 100k steps and this runs on each of
    # them for every chart. The values here are floats or None (`RunState` keeps only `finite` numbers and
    # `ema` makes floats); a NaN or an infinity fails the range test just as `plottable` would have it.
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x values for {len(ys)} y values")
    if _all_plottable(xs) and _all_plottable(ys):  # the usual case, checked at C speed
        return list(xs), list(ys)
    keep = [i for i, (x, y) in enumerate(zip(xs, ys, strict=True))
            if x is not None and y is not None and -PLOTTABLE <= x <= PLOTTABLE and -PLOTTABLE <= y <= PLOTTABLE]
    return [xs[i] for i in keep], [ys[i] for i in keep]


def _all_plottable(values: list[float | None]) -> bool:
    """No None, NaN or infinity, nothing beyond `PLOTTABLE`: what `_finite_pairs` keeps of every value."""
    if not values or None in values:
        return not values
    try:
        total = math.fsum(values)  # NaN or infinite if any value is
    except (OverflowError, ValueError):  # values near the float limit, or both infinities: out of range
        return False
    return math.isfinite(total) and -PLOTTABLE <= min(values) and max(values) <= PLOTTABLE


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = True) -> list[float]:
    """About `n` round tick values covering [lo, hi] (1, 2, 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10)), key=lambda c: abs(math.log((hi - lo) / c / (n - 1))))
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step) * step
    ticks, t = [], first
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 10))
        t += step
    return ticks


def fmt_tick(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        v = int(value)
        return f"{v / 1000:g}k" if abs(v) >= 10_000 else str(v)
    return f"{value:.3g}"


# ---- x axis ------------------------------------------------------------------------------------------------


def _time_unit(runs: list[RunState]) -> tuple[str, float]:
    """("minutes" or "hours", seconds per unit) from the longest run shown (its events, not the clock)."""
    spans = [r.last_ts - r.started_ts for r in runs if r.last_ts is not None and r.started_ts is not None]
    span = max(spans, default=0.0)
    return ("hours", 3600.0) if span > 2 * 3600 else ("minutes", 60.0)


class _XAxis:
    """Turns (step, ts) into the chart's x for one run, by the setting: global step or time since start."""

    def __init__(self, settings: ChartSettings, runs: list[RunState]):
        self.by_time = settings.x_axis == "time"
        self.unit, self.per = _time_unit(runs)

    @property
    def label(self) -> str:
        return f"{self.unit} since start" if self.by_time else "step"

    def x(self, run: RunState, step: int | None, ts: float | None) -> float | None:
        if not self.by_time:
            return None if step is None else float(step)
        if ts is None or run.started_ts is None:
            return None
        return (ts - run.started_ts) / self.per

    def key(self, run: RunState) -> tuple:
        """What `x` of this run depends on besides the step and time: equal keys, equal x values."""
        return (self.by_time, self.per, run.started_ts) if self.by_time else (False,)

    def sample_xs(self, run: RunState, samples: list[StepSample]) -> list[float | None]:
        """`x` of each step sample."""
        return _sample_xs(self.key(run), samples)


def _sample_xs(key: tuple, samples: list[StepSample]) -> list[float | None]:
    """`x` of each step sample on the axis of `key` (`_XAxis.key`), in one comprehension (a 100k-step log has
    as many)."""
    if not key[0]:
        return [None if s.step is None else float(s.step) for s in samples]
    _, per, start = key
    if start is None:
        return [None] * len(samples)
    return [None if s.ts is None else (s.ts - start) / per for s in samples]


class _StepCurves:
    """The step charts of one state, worked out at most once per version of it, x axis and smoothing: a key
    (s, x) redraws a 100k-step log from these instead of going over every step again (`_step_curves`).

    A new version of a state whose samples only grew (a live log) folds the new samples alone (`grow`): the
    step lists, x values, the smoothing and each line's envelope (`LiveEnvelope`) go on from where they were.
    """

    def __init__(self, run: RunState):
        self.folded = 0  # run.samples folded so far
        self.last: StepSample | None = None  # the last of them
        self.nan_steps = len(run.nan_steps)  # a new NaN step may hide a step folded before: worked out anew
        self.samples: list[StepSample] = []
        self.raw: list[float | None] = []
        self._xs: dict[tuple, list[float | None]] = {}
        # the last smoothing's values (100k of them: one kept) and where its average stands
        self._ema: tuple[float, list[float | None], tuple[float, int]] | None = None
        self._raw: dict[tuple, LiveEnvelope] = {}
        self._smoothed: dict[tuple, LiveEnvelope] = {}
        self._rates: dict[str, tuple[list[StepSample], LiveEnvelope]] = {}  # x: the sample's place in the list
        self._shown: dict[tuple, Any] = {}  # what the charts were given for this version
        self.grow(run)

    def grows_into(self, run: RunState) -> bool:
        """Whether `run` holds the samples folded here, and after them only new ones."""
        n = self.folded
        return (len(run.nan_steps) == self.nan_steps and len(run.samples) >= n
                and (n == 0 or run.samples[n - 1] is self.last))

    def grow(self, run: RunState) -> None:
        """Fold the samples `run` holds beyond those folded (`grows_into`)."""
        new = run.samples[self.folded:]
        self.folded, self.last = len(run.samples), run.samples[-1] if run.samples else None
        self._shown.clear()
        nan_steps = run.nan_steps
        kept = [s for s in new if s.loss is not None or s.step in nan_steps]
        raw = [None if s.step is not None and s.step in nan_steps else s.loss for s in kept]
        self.samples += kept
        self.raw += raw
        smoothed: list[float | None] = []
        if self._ema is not None:
            weight, values, after = self._ema
            smoothed, after = ema_on(raw, weight, after)
            values += smoothed
            self._ema = (weight, values, after)
            self._smoothed = {k: line for k, line in self._smoothed.items() if k[1] == weight}
        for key, xs in self._xs.items():
            more = _sample_xs(key, kept)
            xs += more
            if key in self._raw:
                self._raw[key].add(more, raw)
            if self._ema is not None and (key, self._ema[0]) in self._smoothed:
                self._smoothed[key, self._ema[0]].add(more, smoothed)
        for attr, (samples, line) in self._rates.items():
            values = list(map(attrgetter(attr), new))
            with_value = new if None not in values else [s for s, v in zip(new, values, strict=True) if v is not None]
            line.add([float(i) for i in range(len(samples), len(samples) + len(with_value))],
                     [v for v in values if v is not None])
            samples += with_value

    def xs(self, run: RunState, axis: _XAxis) -> list[float | None]:
        key = axis.key(run)
        if key not in self._xs:
            self._xs[key] = axis.sample_xs(run, self.samples)
        return self._xs[key]

    def raw_curve(self, run: RunState, axis: _XAxis) -> tuple[list[float], list[float], float | None]:
        """The drawable raw losses (their envelope), and the highest of them (None: none)."""
        key = axis.key(run)
        if ("raw", key) not in self._shown:
            xs = self.xs(run, axis)
            if key not in self._raw:
                self._raw[key] = LiveEnvelope()
                self._raw[key].add(xs, self.raw)
            line = self._raw[key]
            self._shown["raw", key] = (*line.points(), line.high)
        return self._shown["raw", key]

    def smoothed_curve(self, run: RunState, axis: _XAxis, weight: float) -> tuple[list[float], list[float]]:
        """The drawable smoothed losses (their envelope; smoothed over every step)."""
        key = (axis.key(run), weight)
        if ("smoothed", key) not in self._shown:
            xs = self.xs(run, axis)
            if key not in self._smoothed:
                if self._ema is None or self._ema[0] != weight:
                    self._ema = (weight, *ema_on(self.raw, weight))
                self._smoothed[key] = LiveEnvelope()
                self._smoothed[key].add(xs, self._ema[1])
            self._shown["smoothed", key] = self._smoothed[key].points()
        return self._shown["smoothed", key]

    def rate_samples(self, run: RunState, attr: str) -> list[StepSample]:
        """The step samples with a value of `attr` (nothing is smoothed there), reduced to their envelope in
        step order before the x axis is worked out for them."""
        if ("rate", attr) not in self._shown:
            if attr not in self._rates:
                samples = self.all_with(run, attr)
                line = LiveEnvelope()
                line.add([float(i) for i in range(len(samples))], list(map(attrgetter(attr), samples)))
                self._rates[attr] = (samples, line)
            samples, line = self._rates[attr]
            idx = line.indices()
            self._shown["rate", attr] = [samples[int(line.xs[i])] for i in (range(len(line.xs)) if idx is None else idx)]
        return self._shown["rate", attr]

    @staticmethod
    def all_with(run: RunState, attr: str) -> list[StepSample]:
        values = list(map(attrgetter(attr), run.samples))  # C speed: 100k samples in a long log
        if None not in values:
            return list(run.samples)
        return [s for s, v in zip(run.samples, values, strict=True) if v is not None]


# state -> (what its step charts were worked out from, the curves): gone with the state (a replaced log, a
# run no longer shown). `version` changes with every event folded; the lengths guard a state changed by hand.
_CURVES: weakref.WeakKeyDictionary[RunState, tuple[tuple, _StepCurves]] = weakref.WeakKeyDictionary()


def _step_curves(run: RunState) -> _StepCurves:
    key = (run.version, len(run.samples), len(run.nan_steps))
    cached = _CURVES.get(run)
    if cached is None or cached[0] != key:
        curves = cached[1] if cached is not None and cached[1].grows_into(run) else None
        if curves is None:
            curves = _StepCurves(run)
        else:
            curves.grow(run)
        cached = (key, curves)
        _CURVES[run] = cached
    return cached[1]


def _run_label(run: RunState, runs: list[RunState]) -> str:
    return run.name or f"run {runs.index(run) + 1}"


# ---- the charts ----------------------------------------------------------------------------------------------


def _nan_marks(spec: ChartSpec, runs: list[RunState], axis: _XAxis, y_at: float) -> None:
    """One marker per NaN record with a step, at the top of the chart, shaped by what the guard did."""
    placed: dict[str, tuple[list[float], list[float]]] = {}
    for run in runs:
        for rec in run.nans:
            x = axis.x(run, rec.step, rec.ts)
            if x is None:
                continue
            action = rec.action if rec.action in NAN_MARKS else "report"
            xs, ys = placed.setdefault(action, ([], []))
            xs.append(x)
            ys.append(y_at)
            if action in ("rollback", "abort"):
                spec.vlines.append((x, NAN_MARKS[action][1]))
    for action, (xs, ys) in placed.items():
        marker, color, label = NAN_MARKS[action]
        spec.series.append(Series(label, xs, ys, color, scatter=True, marker=marker))


def loss_chart(runs: list[RunState], settings: ChartSettings) -> ChartSpec:
    """Train loss per step (raw and smoothed) with validation loss per epoch; NaN marks where they happened.

    One run: raw (grey), smoothed, val loss (dots). Several: each run's smoothed loss and val dots in its
    colour, the legend naming the runs.
    """
    axis = _XAxis(settings, runs)
    w = settings.smoothing
    title = f"loss · smoothing {w:g} (s)" if w else "loss · raw (s: smooth)"
    spec = ChartSpec(title, axis.label, integer_x=not axis.by_time)
    single = len(runs) == 1
    highs: list[float] = []
    for i, run in enumerate(runs):
        color = "cyan+" if single else RUN_COLORS[i % len(RUN_COLORS)]
        curves = _step_curves(run)
        raw_x, raw_y, raw_high = curves.raw_curve(run, axis)
        name = _run_label(run, runs)
        if single and settings.show_raw and w > 0:
            spec.series.append(Series("train", list(raw_x), list(raw_y), color="gray"))
        smooth_label = ("train (smoothed)" if w else "train") if single else name
        smooth_x, smooth_y = curves.smoothed_curve(run, axis, w)
        spec.series.append(Series(smooth_label, list(smooth_x), list(smooth_y), color=color))
        val_x = [axis.x(run, r.step, r.ts) for r in run.rows]
        val_y = [None if "val_loss" in r.nan_fields else r.val_loss for r in run.rows]
        vx, vy = _finite_pairs(val_x, val_y)
        spec.series.append(
            Series("val" if single else None, vx, vy, "orange+" if single else color, scatter=True, marker="●")
        )
        highs += ([] if raw_high is None else [raw_high]) + vy
    _nan_marks(spec, runs, axis, max(highs) if highs else 1.0)
    return spec


def dice_chart(runs: list[RunState], settings: ChartSettings) -> ChartSpec:
    """One run: volume, slice and global Dice per epoch. Several: each run's volume Dice (model selection)."""
    by_time = settings.x_axis == "time"
    axis = _XAxis(settings, runs)
    xlabel = axis.label if by_time else "epoch"

    def x_of(run: RunState, row) -> float | None:
        return axis.x(run, None, row.ts) if by_time else float(row.epoch)

    if len(runs) == 1:
        run = runs[0]
        spec = ChartSpec("Dice per epoch", xlabel, integer_x=not by_time, empty="no validation yet (after each epoch)")
        for (metric, label), color in zip(DICE_METRICS, ("green+", "blue+", "magenta+"), strict=True):
            xs = [x_of(run, r) for r in run.rows]
            ys = [None if metric in r.nan_fields else getattr(r, metric) for r in run.rows]
            spec.series.append(_epoch_series(label, *_finite_pairs(xs, ys), color))
        return spec
    spec = ChartSpec("volume Dice per epoch", xlabel, integer_x=not by_time, empty="no validation yet (after each epoch)")
    for i, run in enumerate(runs):
        xs = [x_of(run, r) for r in run.rows]
        ys = [None if "volume_dice" in r.nan_fields else r.volume_dice for r in run.rows]
        spec.series.append(_epoch_series(_run_label(run, runs), *_finite_pairs(xs, ys), RUN_COLORS[i % len(RUN_COLORS)]))
    return spec


def _epoch_series(label: str, xs: list[float], ys: list[float], color: str | int) -> Series:
    """A line, or a dot while there is a single epoch (a line needs two points)."""
    return Series(label, xs, ys, color, scatter=len(xs) == 1, marker="●" if len(xs) == 1 else "braille")


def _step_value_chart(runs: list[RunState], settings: ChartSettings, title: str, attr: str) -> ChartSpec:
    axis = _XAxis(settings, runs)
    # before a live run's first epoch its first step event may still come; after it, or once runs end, none
    # logged means fewer steps than train.log_every (the demo preset on 2 training cases: 1 step per epoch)
    early = any(run.status in ("waiting", "running") for run in runs) and not any(run.rows for run in runs)
    spec = ChartSpec(title, axis.label, integer_x=not axis.by_time, empty="no data yet" if early else NO_STEP_EVENTS)
    for i, run in enumerate(runs):
        samples = _step_curves(run).rate_samples(run, attr)
        xs = axis.sample_xs(run, samples)
        ys = [getattr(s, attr) for s in samples]
        label = None if len(runs) == 1 else _run_label(run, runs)
        spec.series.append(Series(label, *_finite_pairs(xs, ys), color=RUN_COLORS[i % len(RUN_COLORS)]))
    return spec


def lr_chart(runs: list[RunState], settings: ChartSettings) -> ChartSpec:
    return _step_value_chart(runs, settings, "learning rate", "lr")


def throughput_chart(runs: list[RunState], settings: ChartSettings) -> ChartSpec:
    return _step_value_chart(runs, settings, "samples/s", "samples_per_s")


CHARTS = {"loss": loss_chart, "dice": dice_chart, "lr": lr_chart, "throughput": throughput_chart}


def all_charts(runs: list[RunState], settings: ChartSettings) -> dict[str, ChartSpec]:
    return {name: build(runs, settings) for name, build in CHARTS.items()}


# ---- drawing --------------------------------------------------------------------------------------------------


def draw(plt: Any, spec: ChartSpec, width: int = 80, height: int = 20) -> None:
    """Put `spec`'s data on a plotext figure (`plt`: textual-plotext's `Plot` or plotext's own figure).

    Title and legend are not plotext's (it writes the legend over the data): `legend_lines` draws them
    above the frame. `width` and `height` (cells, of the figure) choose the ticks and the headroom.
    """
    plt.clear_figure()
    drawn = [s for s in spec.series if s.xs]
    lo = x_lo = min(min(s.xs) for s in drawn)  # per series, at C speed
    hi = max(max(s.xs) for s in drawn)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    plt.xlim(lo, hi)  # plotext's own choice (vertical lines sit on points), set so that `envelope` knows it
    ticks = nice_ticks(lo, hi, max(3, min(10, width // 12)), integer=spec.integer_x)
    if x_lo >= 0:  # steps, epochs, time since the start: no tick at -1 beside a lone point at 0
        ticks = [t for t in ticks if t >= 0]
    plt.xticks(ticks, [fmt_tick(t) for t in ticks])
    y_lo, y_hi = min(min(s.ys) for s in drawn), max(max(s.ys) for s in drawn)
    if y_hi == y_lo:
        pad = abs(y_lo) * 0.1 or 1.0
        y_lo, y_hi = y_lo - pad, y_hi + pad
    marks_on_top = any(s.scatter and s.label and s.label.startswith("NaN") for s in spec.series)
    plt.ylim(y_lo, y_hi + (y_hi - y_lo) * 0.04 if marks_on_top else y_hi)  # NaN marks sit on the top edge
    ticks = nice_ticks(y_lo, y_hi, max(3, min(8, (height - 3) // 3)), integer=False)
    labels = [fmt_tick(t) for t in ticks]
    plt.yticks(ticks, labels)
    # plotext's canvas: the figure less its two y axes and the tick labels; a braille cell is two pixels across
    columns = 2 * (width - 2 - max(map(len, labels), default=0))
    for s in drawn:
        if s.scatter or len(s.xs) == 1:  # a line needs two points: one alone is a dot, not a braille speck
            plt.scatter(s.xs, s.ys, color=s.color, marker=s.marker if s.scatter else "●")
        elif s.marker == "braille":  # a character's rows, not which of its two halves: half the points again
            plt.plot(*envelope(s.xs, s.ys, columns, lo, hi, cell=2), color=s.color, marker=s.marker)
        else:
            plt.plot(s.xs, s.ys, color=s.color, marker=s.marker)
    for x, color in spec.vlines:
        plt.vline(x, color)


def _swatch(s: Series) -> str:
    from plotext._utility import colorize  # the colour exactly as plotext paints it

    return colorize(s.marker if s.scatter else "━━", s.color)  # scatter markers are single characters


def legend_lines(spec: ChartSpec, width: int) -> list[str]:
    """The title, the x axis and one swatch per labelled series, packed into lines `width` wide (ANSI).

    NaN marks share one "NaN:" prefix (x skipped  R rollback ...) to keep the legend short on small screens.
    """
    head = spec.title[:width]
    x_axis = f"x: {spec.xlabel}"[:width]
    items: list[tuple[str, int]] = [(x_axis, len(x_axis))]  # (coloured text, printed width)
    nan_prefix = False
    for s in spec.series:
        if not (s.label and s.xs):
            continue
        label, prefix = s.label, ""
        if label.startswith("NaN: "):
            label = label[5:]
            prefix = "" if nan_prefix else "NaN: "  # kept with its first item when the legend wraps
            nan_prefix = True
        items.append((f"{prefix}{_swatch(s)} {label}", len(prefix) + (1 if s.scatter else 2) + 1 + len(label)))
    lines, line, used = [], head, len(head)
    for item, n in items:
        if used + 3 + n > width and used:
            lines.append(line)
            line, used = item, n
        else:
            line, used = f"{line}{' · ' if item is x_axis else '  '}{item}", used + 3 + n
    lines.append(line)
    return lines


def chart_text(plt: Any, spec: ChartSpec, width: int, height: int) -> str:
    """Legend lines and the plot under them, `height` lines in all (ANSI colours)."""
    legend = legend_lines(spec, width)[: max(1, height - 6)]
    if not spec.has_data:  # no frame around nothing: the title, and what the chart is waiting for
        blank = [""] * max(0, height - 2)
        middle = len(blank) // 2
        return "\n".join([*legend, *blank[:middle], spec.empty.center(width), *blank[middle:]][:height])
    plot_h = max(4, height - len(legend))
    draw(plt, spec, width, plot_h)
    plt.plotsize(width, plot_h)
    # plotsize alone leaves a figure no wider than the terminal plotext finds (80 columns without one) and
    # textual-plotext's figure at its old size (textual-plotext issue #5): the size asked, always.
    plt._set_size(width, plot_h)
    return "\n".join([*legend, plt.build()])


def render_text(spec: ChartSpec, width: int, height: int, *, color: bool = True) -> str:
    """The chart as text (ANSI colours unless `color=False`), for `watch --plot`."""
    from plotext._figure import _figure_class  # plotext's own figure: no global state shared between charts

    fig = _figure_class()
    fig.theme("pro" if color else "clear")
    text = chart_text(fig, spec, width, height)
    return text if color else re.sub(r"\x1b\[[0-9;]*m", "", text)
