"""Device and mixed-precision choice of the trainer (`liverctl.train.device`), without needing a GPU."""

from __future__ import annotations

import pytest
import torch

from liverctl.errors import LiverctlError
from liverctl.train.device import Precision, resolve_device, resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize("bf16_supported, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert resolve_precision("auto", CUDA).mode == expected


def test_auto_off_cuda_is_float32():
    assert resolve_precision("auto", CPU).mode == "off"
    assert resolve_precision("auto", torch.device("mps")).mode == "off"


@pytest.mark.parametrize("mode", ["bf16", "fp16", "off"])
def test_an_explicit_mode_is_kept(monkeypatch, mode):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision(mode, CPU).mode == mode
    assert resolve_precision(mode, CUDA).mode == mode


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(LiverctlError, match="does not support bfloat16"):
        resolve_precision("bf16", CUDA)
    assert resolve_precision("bf16", CPU).mode == "bf16"  # CPU autocast has bf16


def test_an_unknown_mode_is_refused():
    with pytest.raises(LiverctlError, match="train.amp must be auto, bf16, fp16 or off, got 'fp8'"):
        resolve_precision("fp8", CPU)


def test_what_each_mode_means():
    assert (Precision("bf16").dtype, Precision("bf16").autocast, Precision("bf16").needs_scaler) == (
        torch.bfloat16, True, False)
    assert (Precision("fp16").dtype, Precision("fp16").autocast, Precision("fp16").needs_scaler) == (
        torch.float16, True, True)
    assert (Precision("off").dtype, Precision("off").autocast, Precision("off").needs_scaler) == (None, False, False)


def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == CPU
    with pytest.raises(LiverctlError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(LiverctlError, match="must be auto, cpu, cuda or mps"):
        resolve_device("tpu")
