"""scripts/gpu_check.py summary: the GPU check's JSON and Markdown come out even when parts failed.

The check runs once, in scarce device time; a training part killed by its time limit (or one that never
started) leaves `{"run", "error"}` instead of its figures, and the summary must still write the others'.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_reports_failed_parts_and_keeps_the_others(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "env.json").write_text(json.dumps({"date": "2026-12-06", "device": "NVIDIA H200", "cpus": 16}))
    (out / "stages.tsv").write_text("env\t0\t3\ntrain_bf16\t0\t41\ntrain_torchrun\t137\t60\n")
    (out / "train_bf16.json").write_text(json.dumps({
        "run": "/w/runs/pipe-bf16", "device": "cuda", "amp": "bf16", "world_size": 1, "steps": 64,
        "samples_per_s_median": 612.5, "nan_events": [], "status": "finished", "best": {"epoch": 2},
    }))
    (out / "train_torchrun.json").write_text(
        json.dumps({"run": "/w/runs/ddp", "error": "no events.jsonl: the run did not start"}))
    (out / "nan_story.json").write_text(json.dumps({"preset": "v5-focal", "lr": 0.001, "steps": 200, "ways": {
        "notebook": {"first_non_finite_loss_step": 17, "non_finite_losses": 3},  # a part cut short: keys missing
    }}))
    load_gpu_check().main(["summary", "--out", str(out)])
    md = (out / "gpu-check.md").read_text()
    assert "train_torchrun: no events.jsonl: the run did not start (/w/runs/ddp)" in md
    assert "train_bf16: device cuda, amp bf16, world 1, 64 steps, median 612.5 samples/s, status finished" in md
    assert "first non-finite loss at step 17" in md
    assert "| train_torchrun | 137 | 60 |" in md
    summary = json.loads((out / "gpu-check.json").read_text())
    assert summary["train_torchrun"]["error"].startswith("no events.jsonl")
    assert summary["stages"][1] == {"part": "train_bf16", "rc": "0", "seconds": "41"}
