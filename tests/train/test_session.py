"""train/session.py: what a run records about its software."""

from __future__ import annotations

import sys
from importlib import metadata
from types import SimpleNamespace

import torch

import liverctl
from liverctl.train.session import versions


def test_versions_are_read_without_importing_the_libraries(monkeypatch):
    # importing albumentations to read its version cost every trainer process, each torchrun rank, about a second
    monkeypatch.delitem(sys.modules, "albumentations", raising=False)
    found = versions()
    assert "albumentations" not in sys.modules
    assert found["albumentations"] == metadata.version("albumentations")
    assert found["torch"] == torch.__version__ and found["liverctl"] == liverctl.__version__  # imported: their own


def test_a_checkpoint_saved_with_more_gpus_visible_resumes_on_fewer(monkeypatch):
    """last.pt holds one CUDA RNG state per GPU visible where it was saved (`get_rng_state_all`); on a machine
    with fewer, torch's `set_rng_state_all` sets device i for the i-th state and fails past the last one."""
    import random

    import numpy as np

    from liverctl.runs.checkpoint import rng_to_plain
    from liverctl.train import distributed
    from liverctl.train.session import _restore, build_scheduler

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = {"optim": {"warmup_steps": 0, "min_lr": 1e-5, "lr": 1e-3, "scheduler": "constant"}}
    s = SimpleNamespace(raw_model=model, optimizer=optimizer, scheduler=build_scheduler(cfg, optimizer, 10),
                        scaler=torch.amp.GradScaler("cpu", enabled=False), info=distributed.DistInfo(),
                        best={"epoch": None, "volume_dice": None})
    saved_states = [torch.full((16,), i, dtype=torch.uint8) for i in range(2)]  # two GPUs where it was saved
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": s.scheduler.state_dict(),
             "epoch": 1, "global_step": 5,
             "rng": rng_to_plain({"python": random.getstate(), "numpy": np.random.get_state(),
                                  "torch": torch.get_rng_state(), "cuda": saved_states})}
    generators = [None]  # this machine: one GPU

    def set_rng_state(new_state, device: int):  # torch's: default_generators[device], one per GPU here
        generators[device] = new_state

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(generators))
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)
    _restore(s, state)
    assert generators[0] is saved_states[0] and s.global_step == 5
