"""Checkpoints: atomic, self-describing, sidecar without tensors, `load_run_model`."""

from __future__ import annotations

import json

import pytest
import torch

from liverctl.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    load_run_model,
    read_sidecar,
    save_checkpoint,
)
from liverctl.config import resolve_config
from liverctl.errors import LiverctlError
from liverctl.models import build_model

torch.set_num_threads(1)


def _state(cfg, model, dice=0.9):
    return {
        "run": "r",
        "preset": cfg["preset"],
        "config": cfg,
        "epoch": 2,
        "global_step": 40,
        "model": model.state_dict(),
        "optimizer": {},
        "metrics": {"val_loss": 0.1, "volume_dice": dice, "slice_dice": float("nan"), "global_dice": 0.9},
        "best": {"epoch": 2, "volume_dice": dice},
    }


@pytest.fixture
def cfg():
    return resolve_config("demo", ["data.input_size=64"])


def test_saved_checkpoint_loads_back_as_a_model(tmp_path, cfg):
    model = build_model(cfg)
    save_checkpoint(tmp_path, "best", _state(cfg, model))
    loaded, loaded_cfg = load_run_model(tmp_path, "best")
    assert loaded_cfg == cfg and not loaded.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)


def test_sidecar_has_no_tensors_and_nan_as_null(tmp_path, cfg):
    save_checkpoint(tmp_path, "last", _state(cfg, build_model(cfg)))
    side = read_sidecar(tmp_path, "last")
    assert "model" not in side and side["epoch"] == 2
    assert side["metrics"]["slice_dice"] is None
    json.dumps(side, allow_nan=False)


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path, cfg):
    model = build_model(cfg)
    save_checkpoint(tmp_path, "last", _state(cfg, model, 0.5))
    save_checkpoint(tmp_path, "last", _state(cfg, model, 0.7))
    assert load_checkpoint(checkpoint_path(tmp_path, "last"))["metrics"]["volume_dice"] == 0.7
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.json", "last.pt"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, cfg, monkeypatch):
    model = build_model(cfg)
    save_checkpoint(tmp_path, "last", _state(cfg, model, 0.5))

    def broken_save(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, "last", _state(cfg, model, 0.7))
    monkeypatch.undo()
    assert load_checkpoint(checkpoint_path(tmp_path, "last"))["metrics"]["volume_dice"] == 0.5
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.json", "last.pt"]


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(LiverctlError, match="run folder not found"):
        load_run_model(tmp_path / "nope")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(LiverctlError, match="no 'best' checkpoint"):
        load_run_model(tmp_path)
    torch.save({"weights": 1}, tmp_path / "checkpoints" / "best.pt")
    with pytest.raises(LiverctlError, match="not a liverctl checkpoint"):
        load_run_model(tmp_path)
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"garbage")
    with pytest.raises(LiverctlError, match="cannot read checkpoint"):
        load_run_model(tmp_path)
