"""Device and mixed-precision choice of the trainer (`liverctl.device`), without needing a GPU."""

from __future__ import annotations

import pytest
import torch

from liverctl.device import Precision, inference_precision, resolve_device, resolve_precision
from liverctl.errors import LiverctlError

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
    with pytest.raises(LiverctlError, match="must be auto, cpu, cuda, cuda:N or mps"):
        resolve_device("tpu")
    with pytest.raises(LiverctlError, match="^--device cuda:1: no CUDA device"):  # was "--device cuda: ..."
        resolve_device("cuda:1")


def test_cuda_n_names_one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert chosen == [1, 0]
    with pytest.raises(LiverctlError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("amp", ["auto", "bf16", "fp16", "off"])
def test_inference_never_autocasts_off_cuda(amp):
    assert inference_precision(amp, "cpu").mode == "off"
    assert inference_precision(amp, torch.device("mps")).mode == "off"


def test_inference_on_cuda_follows_the_training_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert inference_precision("auto", CUDA).mode == "fp16"
    assert inference_precision("off", CUDA).mode == "off"
    with pytest.raises(LiverctlError, match="amp must be"):
        inference_precision("fp8", "cpu")


def test_the_autocast_context_is_a_real_autocast_only_when_on():
    x = torch.ones(2, 2)
    with Precision("bf16").autocast_context("cpu"):
        assert (x @ x).dtype == torch.bfloat16
    with Precision("off").autocast_context("cpu"):
        assert (x @ x).dtype == torch.float32


def test_fp16_on_the_cpu_is_kept_but_the_user_is_told_it_is_slow():
    from liverctl.device import precision_note

    assert "fp16 on the CPU" in precision_note(resolve_precision("fp16", CPU), CPU)
    assert precision_note(Precision("fp16"), CUDA) is None
    assert all(precision_note(Precision(mode), CPU) is None for mode in ("bf16", "off"))


def _emulated_bf16_only(including_emulation: bool = True) -> bool:
    """torch.cuda.is_bf16_supported on a T4 or P100 (compute capability 7.5 / 6.0): bfloat16 only emulated."""
    return including_emulation


def test_auto_on_a_gpu_that_only_emulates_bf16_is_fp16(monkeypatch):
    from liverctl.device import precision_note

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", _emulated_bf16_only)
    assert resolve_precision("auto", CUDA).mode == "fp16"
    assert inference_precision("auto", CUDA).mode == "fp16"
    # asked for, it runs (emulated), and the user is told why fp16 is the better choice there
    assert resolve_precision("bf16", CUDA).mode == "bf16"
    assert "without native bfloat16" in precision_note(Precision("bf16"), CUDA)
    assert precision_note(Precision("fp16"), CUDA) is None


def test_native_bf16_with_a_torch_whose_check_takes_no_argument(monkeypatch):
    """torch is unpinned (Kaggle's own builds): before 2.3, is_bf16_supported took no including_emulation, and
    `amp=auto` on CUDA failed with a TypeError. Its answer then counted no emulation: the native one."""
    from liverctl.device import native_bf16

    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert native_bf16() is supported
        assert resolve_precision("auto", CUDA).mode == ("bf16" if supported else "fp16")
