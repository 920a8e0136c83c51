"""Time what a settings key costs `liverctl watch` on a long log: a headless Pilot at 120 x 40 over a
generated 100k-step run, pressing `s` (smoothing) and `x` (step/time) in turns (BENCHMARKS.md, "watch keys").

    .venv/bin/python scripts/bench_watch_keys.py /tmp/watchbench [--old REV]
    .venv/bin/python scripts/bench_watch_keys.py /tmp/watchbench --rebuilds 12 --old REV [--old REV2]

Per key press: the redraw (`WatchApp.show_state`: charts worked out, tables, header), the charts' drawing
(`Chart.render`: plotext) and the press itself until the screen is painted again (`pilot.press` and `pilot.pause`, charts drawn included). With
`--old REV`, the app's redraw, the charts, the chart widget's `show` and the header's step count of that
git revision (and its chart widget's drawing) are loaded beside the working tree's and the two take turns in
one process, press by press.

With `--rebuilds N`: no app, no keys; the log's state grows by `--grow` step events N times (a live log), and
each new version has all four charts worked out (`charts.all_charts`) by the working tree's charts and by each
`--old` revision's, in turns (the order turned round each time), each with its own curves kept between versions.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from watch_fixtures import EventScript  # noqa: E402

from liverctl.watch import app as app_module  # noqa: E402
from liverctl.watch.state import RunState  # noqa: E402
from liverctl.watch.widgets import Chart  # noqa: E402


def write_long_log(run_dir: Path, steps: int = 100_000, steps_per_epoch: int = 1000) -> Path:
    """A finished run of `steps` step events (every step logged), an epoch_end every `steps_per_epoch`."""
    path = run_dir / "events.jsonl"
    if path.exists():
        return path
    s = EventScript(run_dir.name, t0=1e9)
    epochs = steps // steps_per_epoch
    s.start(preset="v5", device="cuda:0", amp="bf16", epochs=epochs, steps_per_epoch=steps_per_epoch)
    for step in range(steps):
        epoch = step // steps_per_epoch
        s.add("step", after=0.5, epoch=epoch, step=step,
              loss=round(0.55 * math.exp(-step / 9000) + 0.08 + 0.01 * math.sin(step), 5),
              lr=1e-4 * (1 - step / steps), samples_per_s=44.0 + 0.1 * (step % 7), grad_norm=1.5, gpu_mem_gb=9.2)
        if (step + 1) % steps_per_epoch == 0:
            s.epoch(epoch + 1, seconds=500.0, after=5.0, train_loss=0.1, val_loss=0.11, volume_dice=0.9,
                    epochs=epochs)
    s.add("run_end", status="completed", best={"epoch": epochs, "volume_dice": 0.9}, message="")
    return s.write(path)


def _load_module(rev: str, relpath: str, name: str):
    """`relpath` as it was at git revision `rev`, loaded as module `name` beside the working tree's."""
    source = subprocess.run(["git", "show", f"{rev}:{relpath}"], check=True, capture_output=True, text=True).stdout
    path = Path("/tmp") / f"{name}_{rev.replace('/', '_')}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def old_side(rev: str) -> dict[tuple[object, str], object]:
    """What a key press runs, as it was at `rev`: the app's redraw, the charts, the chart widget, the header's
    step count (loaded from that revision and patched in while it is that side's turn)."""
    charts = _load_module(rev, "liverctl/watch/charts.py", "old_watch_charts")
    app = _load_module(rev, "liverctl/watch/app.py", "old_watch_app")
    widgets = _load_module(rev, "liverctl/watch/widgets.py", "old_watch_widgets")
    state = _load_module(rev, "liverctl/watch/state.py", "old_watch_state")
    app.all_charts = charts.all_charts
    widgets.chart_text = charts.chart_text  # the chart drawn by that revision's plotext calls
    return {(app_module.WatchApp, "show_state"): app.WatchApp.show_state,
            (Chart, "show"): widgets.Chart.show, (Chart, "render"): widgets.Chart.render,
            (RunState, "step_in_epoch"): state.RunState.step_in_epoch}


async def measure(run_dir: Path, sides: dict, presses: int) -> dict[str, dict[str, list[float]]]:
    times = {side: {f"{what} {key}": [] for what in ("rebuild", "draw", "press") for key in "sx"} for side in sides}
    spent = {"rebuild": 0.0, "draw": 0.0}  # show_state, and the charts' `render` (plotext)

    def timed(method, what):
        def timed_method(self):
            t = time.perf_counter()
            result = method(self)
            spent[what] += time.perf_counter() - t
            return result
        return timed_method

    app = app_module.make_watch_app(run_dir, poll_seconds=3600.0, clock=lambda: 2e9)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.watcher.reading or not app.watcher.state.n_events:
            await pilot.pause(0.1)
        await pilot.pause()
        for i in range(presses):
            for side, patches in sides.items():
                for (owner, name), value in patches.items():
                    what = {"show_state": "rebuild", "render": "draw"}.get(name)
                    setattr(owner, name, timed(value, what) if what else value)
                key = "s" if i % 2 == 0 else "x"
                spent.update(rebuild=0.0, draw=0.0)
                t = time.perf_counter()
                await pilot.press(key)
                await pilot.pause()
                times[side][f"press {key}"].append(time.perf_counter() - t)
                for what, seconds in spent.items():
                    times[side][f"{what} {key}"].append(seconds)
    return times


def measure_rebuilds(path: Path, revs: list[str], rounds: int, grow: int) -> dict[str, list[float]]:
    """Seconds per `all_charts` of a new version of the state, per side (see the module's docstring)."""
    import json

    from liverctl.watch import charts

    sides = {"now": charts.all_charts}
    for i, rev in enumerate(revs):
        sides[f"old {rev}"] = _load_module(rev, "liverctl/watch/charts.py", f"old_watch_charts_{i}").all_charts
    events = [json.loads(line) for line in path.read_text().splitlines()]
    steps = [i for i, e in enumerate(events) if e.get("kind") == "step"]
    first = len(steps) - rounds * grow  # the state starts short of its last rounds x grow steps
    bounds = [steps[first + r * grow] for r in range(rounds)] + [len(events)]
    state = RunState("long", clock=lambda: 2e9)
    state.feed(events[:bounds[0]])
    settings = charts.ChartSettings()
    for build in sides.values():  # each side's curves of the first version, as a running app has them
        build([state], settings)
    times: dict[str, list[float]] = {side: [] for side in sides}
    for r in range(rounds):
        state.feed(events[bounds[r]:bounds[r + 1]])
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for side in order:
            t = time.perf_counter()
            sides[side]([state], settings)
            times[side].append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--old", action="append", default=[],
                    help="git revision whose code takes turns with the working tree's (several: --rebuilds only)")
    ap.add_argument("--presses", type=int, default=24)
    ap.add_argument("--rebuilds", type=int, default=0, help="time N rebuilds of a growing log's charts instead")
    ap.add_argument("--grow", type=int, default=100, help="step events a rebuild's new version adds")
    args = ap.parse_args()
    run_dir = args.folder / "long"
    run_dir.mkdir(parents=True, exist_ok=True)
    path = write_long_log(run_dir)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
    if args.rebuilds:
        for side, values in measure_rebuilds(path, args.old, args.rebuilds, args.grow).items():
            print(f"  {side:14s} rebuild median {statistics.median(values) * 1000:6.1f} ms  "
                  f"max {max(values) * 1000:6.1f} ms  ({len(values)} versions)")
        return
    if len(args.old) > 1:
        ap.error("one --old for the keys")
    now = {(app_module.WatchApp, "show_state"): app_module.WatchApp.show_state, (Chart, "show"): Chart.show,
           (Chart, "render"): Chart.render,
           (RunState, "step_in_epoch"): RunState.step_in_epoch}
    sides = {"old": old_side(args.old[0]), "now": now} if args.old else {"now": now}
    times = asyncio.run(measure(run_dir, sides, args.presses))
    for side, parts in times.items():
        for what, values in parts.items():
            print(f"  {side:4s} {what:9s} median {statistics.median(values) * 1000:6.1f} ms  "
                  f"max {max(values) * 1000:6.1f} ms  ({len(values)} presses)")


if __name__ == "__main__":
    main()
