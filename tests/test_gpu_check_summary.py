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


def test_verdicts_compare_the_pipeline_with_the_model_alone_and_never_pass_a_missing_figure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    runs = [
        {"precision": "bf16", "step": "plain", "channels_last_cudnn_benchmark": False, "images_per_s": 400.0},
        {"precision": "bf16", "step": "liverctl", "channels_last_cudnn_benchmark": False, "images_per_s": 392.0},
        {"precision": "bf16", "step": "plain", "channels_last_cudnn_benchmark": True, "images_per_s": 450.0},
    ]
    (out / "model_only.json").write_text(json.dumps({"size": 512, "batch": 16, "steps": 20, "runs": runs}))
    (out / "train_bf16.json").write_text(json.dumps({"samples_per_s_median": 343.0, "status": "completed"}))
    (out / "train_torchrun.json").write_text(json.dumps({"backend": "gloo", "status": "completed"}))
    (out / "train_v5focal_fp16.json").write_text(json.dumps({
        "status": "completed", "steps": 50,
        "nan_events": [{"step": 7, "action": "report"}, {"step": 9, "action": "skip_step"}]}))
    load_gpu_check().main(["summary", "--out", str(out)])
    verdicts = {v["figure"]: v for v in json.loads((out / "gpu-check.json").read_text())["verdicts"]}
    bf16 = verdicts["full pipeline vs model only, v5, bf16 (images/s)"]
    assert bf16["measured"] == "343.0 / 392.0 = 0.88x" and bf16["verdict"] == "MISSED"
    guard = verdicts["the guard, model only, bf16: time added per step (guarded vs plain AMP step)"]
    assert guard["measured"].startswith("2.0%") and guard["verdict"] == "met"  # 400 / 392 - 1
    assert verdicts["full pipeline vs model only, v5, fp16 (images/s)"]["verdict"] == "not measured"
    assert verdicts["the guard, model only, fp16: time added per step (guarded vs plain AMP step)"][
        "verdict"] == "not measured"
    focal = verdicts["liverctl's v5-focal under fp16: NaN-guard actions"]
    assert focal["measured"].startswith("1 (completed") and focal["verdict"] == "MISSED"  # a skip is a NaN
    ddp = verdicts["torchrun --nproc_per_node 1: backend and end"]
    assert ddp["measured"] == "gloo, completed" and ddp["verdict"] == "MISSED"  # NCCL is what a GPU must use
    md = (out / "gpu-check.md").read_text()
    assert "| full pipeline vs model only, v5, bf16 (images/s) | 343.0 / 392.0 = 0.88x | >= 0.9x | MISSED |" in md


def test_model_only_and_nan_story_run_on_the_cpu_as_a_dry_run(tmp_path):
    """--allow-cpu: the check's own code runs end to end without CUDA (tiny sizes; the figures mean nothing),
    so a mistake in it is found here rather than in device time."""
    gpu_check = load_gpu_check()
    gpu_check.main(["model-only", "--out", str(tmp_path), "--size", "32", "--batch", "2", "--steps", "1",
                    "--precisions", "bf16", "--allow-cpu"])
    gpu_check.main(["nan-story", "--out", str(tmp_path), "--size", "32", "--batch", "2", "--steps", "2",
                    "--allow-cpu"])
    model_only = json.loads((tmp_path / "model_only.json").read_text())
    assert [(r["step"], r["channels_last_cudnn_benchmark"]) for r in model_only["runs"]] == [
        ("plain", False), ("liverctl", False), ("plain", True)]
    assert all(r["images_per_s"] > 0 and r["peak_memory_gib"] is None for r in model_only["runs"])
    story = json.loads((tmp_path / "nan_story.json").read_text())
    assert set(story["ways"]) == {"notebook", "liverctl"}
    assert all(len(w["grad_scaler_scale_min_max_end"]) == 3 for w in story["ways"].values())
    assert story["ways"]["liverctl"]["guard_actions"] == {} and story["ways"]["notebook"]["guard_actions"] is None


def test_env_records_the_commit_named_for_the_device(tmp_path, monkeypatch):
    # The device gets the tree without .git: the session names the commit in the command.
    gpu_check = load_gpu_check()
    monkeypatch.setenv("GPU_CHECK_COMMIT", "abc1234")
    assert gpu_check._commit() == "abc1234"
    monkeypatch.delenv("GPU_CHECK_COMMIT")
    assert gpu_check._commit()  # this checkout has a .git: HEAD
    (tmp_path / "env.json").write_text(json.dumps({"date": "2026-12-06", "commit": "abc1234", "cpus": 16}))
    (tmp_path / "stages.tsv").write_text("env\t0\t3\n")
    gpu_check.main(["summary", "--out", str(tmp_path)])
    assert "2026-12-06, commit abc1234;" in (tmp_path / "gpu-check.md").read_text()
