"""On CUDA: training under AMP through the device augmentation path and pinned loader workers, the NaN guard
and the GradScaler on the GPU, a checkpoint written there read on a CPU, and the GPU's predictions against
the CPU's.

Marked `gpu` (deselected by default; `pytest -m gpu` runs them, as scripts/gpu-check.sh does on the device).
Without CUDA they skip, unless LIVERCTL_GPU_TESTS_ON_CPU=1 runs them on the CPU (`gpu_device` in
conftest.py): a dry run of the tests' own code before scarce device time is spent on them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from train_fixtures import SMALL_MODEL, finite_weights, tiny_cfg

from liverctl.data import augment_device
from liverctl.infer.predict import load_run_models, predict_case_probabilities, read_case_volume
from liverctl.runs.checkpoint import load_checkpoint
from liverctl.runs.events import read_events
from liverctl.runs.folder import checkpoint_path
from liverctl.train import loop

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_on_the_device_path_and_its_checkpoint_on_a_cpu(tiny_store, tmp_path, gpu_device, amp,
                                                                     monkeypatch):
    cfg = tiny_cfg(tiny_store, "train.epochs=1", "train.steps_per_epoch=3", "data.input_size=32",
                   f"train.amp='{amp}'", "data.augment='flip_rotate'", "data.augment_on='device'",
                   "loss.name='0.7*dice + 0.3*focal'")
    run = tmp_path / amp
    result = loop.run_training(cfg, run, device=gpu_device, show_progress=False)
    assert result["status"] == "completed" and result["global_step"] == 3
    events = read_events(run / "events.jsonl")
    assert events[0]["amp"] == amp and str(events[0]["device"]).startswith(gpu_device)
    steps = [e for e in events if e["kind"] == "step"]
    assert len(steps) == 3 and all(math.isfinite(e["loss"]) for e in steps)
    assert not [e for e in events if e["kind"] == "nan"]
    if gpu_device == "cuda":
        assert all(e["gpu_mem_peak_gb"] > 0 for e in steps)

    # the checkpoint holds CPU tensors whatever trained it: a CPU-only notebook's plain torch.load (no
    # map_location) reads it as it is
    plain = torch.load(checkpoint_path(run, "last"), weights_only=True)
    assert all(t.device.type == "cpu" for t in plain["model"].values())
    assert all(t.device.type == "cpu" for moments in plain["optimizer"]["state"].values() for t in moments.values())
    state = load_checkpoint(checkpoint_path(run, "last"))
    assert (state["scaler"] != {}) == (amp == "fp16") and finite_weights(state)

    # and predicts as the GPU does: float32 on both, cuDNN's TF32 convolutions (on by default, ~1e-3
    # relative) turned off for the comparison
    from liverctl.data.store import LiverStore

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)

    store = LiverStore.open(tiny_store)
    case = store.case_ids("test")[0]
    volume, stats = read_case_volume(store, case), store.meta(case).get("stats") or {}
    probs = {}
    for device in ("cpu", gpu_device):
        (model,) = load_run_models([run], which="last", device=device)
        probs[device] = predict_case_probabilities(model, volume, stats, tta="hflip", device=device,
                                                   amp="off")
    assert probs["cpu"].shape == volume.shape
    np.testing.assert_allclose(probs[gpu_device], probs["cpu"], atol=2e-3, rtol=0)


def test_injected_nan_under_fp16_is_skipped_by_the_guard(tiny_store, tmp_path, gpu_device):
    cfg = tiny_cfg(tiny_store, "train.amp='fp16'", "train.epochs=1", "train.steps_per_epoch=4",
                   "data.input_size=32", "train.inject_nan_at_steps=[1]", *SMALL_MODEL)
    result = loop.run_training(cfg, tmp_path / "inj", device=gpu_device, show_progress=False)
    assert result["status"] == "completed" and result["global_step"] == 4
    events = read_events(tmp_path / "inj" / "events.jsonl")
    guard = [(e["action"], e["step"]) for e in events if e["kind"] == "nan" and e["action"] != "report"]
    assert guard == [("skip_step", 2)]  # events count steps from 1: the injection at global step 1 is the 2nd
    assert finite_weights(load_checkpoint(checkpoint_path(tmp_path / "inj", "last")))


def test_fp16_gradient_overflow_is_left_to_the_grad_scaler(tiny_store, tmp_path, gpu_device, poisoned_loss):
    cfg = tiny_cfg(tiny_store, f"loss.name='{poisoned_loss}'", "train.amp='fp16'", "train.epochs=1",
                   "train.steps_per_epoch=4", "data.input_size=32", *SMALL_MODEL)
    result = loop.run_training(cfg, tmp_path / "fp16", device=gpu_device, show_progress=False)
    assert result["status"] == "completed"
    events = read_events(tmp_path / "fp16" / "events.jsonl")
    # the scaler skipped both poisoned steps and halved its scale twice; the guard took no action
    assert [e["action"] for e in events if e["kind"] == "nan"] == ["report", "report"]
    state = load_checkpoint(checkpoint_path(tmp_path / "fp16", "last"))
    assert state["scaler"]["scale"] == 2.0**16 / 4 and finite_weights(state)


def test_device_augmentation_on_the_gpu_matches_the_cpu(gpu_device):
    cfg = {"data": {"augment": "distort", "rotate_limit": 15}}
    params = [augment_device.sample_params(seed, cfg) for seed in range(32)]
    assert any(p["elastic"] is not None for p in params) and any(p["grid"] is not None for p in params)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((32, 3, 48, 48), dtype=np.float32))
    mask = (image[:, 1:2] > 0.5).float()
    sizes = [(48, 48) if i % 2 else (40, 44) for i in range(32)]  # some padded, as a batch of mixed sizes
    out = {}
    for device in ("cpu", gpu_device):
        out[device] = augment_device.warp(image.to(device), mask.to(device), params, sizes, 32)
    torch.testing.assert_close(out[gpu_device][0].cpu(), out["cpu"][0], atol=1e-3, rtol=0)
    # nearest-neighbour masks: a grid point within rounding of a pixel edge may land on either side
    agree = (out[gpu_device][1].cpu() == out["cpu"][1]).float().mean().item()
    assert agree > 0.995
