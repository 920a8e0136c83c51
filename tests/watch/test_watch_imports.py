"""The TUI never loads torch, zarr or the trainer; the trainer never loads textual (fresh interpreters)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

HEAVY = ("torch", "zarr", "numpy", "segmentation_models_pytorch", "liverctl.train")


def loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_watch_loads_no_torch_zarr_numpy_or_trainer():
    statement = "import liverctl.commands.watch, liverctl.watch.app, liverctl.watch.summary"
    assert loaded_after(statement, HEAVY) == []


def test_drawing_a_chart_loads_no_numpy():
    # plotext uses numpy only when it is given numpy arrays; drawing plain lists must not import it.
    statement = (
        "from liverctl.watch import charts, state\n"
        "s = state.RunState()\n"
        "s.feed([{'kind': 'step', 'step': 1, 'ts': 1.0, 'loss': 0.5, 'lr': 1e-3, 'samples_per_s': 9.0}])\n"
        "[charts.render_text(c, 60, 12) for c in charts.all_charts([s], charts.ChartSettings()).values()]"
    )
    assert loaded_after(statement, HEAVY) == []


def test_watch_command_module_does_not_load_textual_until_run():
    # `liverctl --help` imports every command module: the TUI is imported only when `watch` runs.
    assert loaded_after("import liverctl.commands.watch", ("textual",)) == []


@pytest.mark.skipif(importlib.util.find_spec("liverctl.train") is None, reason="liverctl.train not built yet")
def test_trainer_does_not_load_textual():
    assert loaded_after("import liverctl.train", ("textual", "liverctl.watch")) == []
