"""The one choice of device and mixed precision for train, predict, submit, report and bench.

Training: bf16 where the GPU supports it, else fp16 with a GradScaler; off on CPU and MPS unless asked.
Inference: the same choice on CUDA, never autocast elsewhere (`inference_precision`)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from liverctl.errors import LiverctlError
from liverctl.plural import plural
from liverctl.printable import first_line, quoted


@dataclass(frozen=True)
class Precision:
    mode: str  # bf16 | fp16 | off

    @property
    def dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)

    @property
    def autocast(self) -> bool:
        return self.mode != "off"

    @property
    def needs_scaler(self) -> bool:
        return self.mode == "fp16"

    def autocast_context(self, device):
        """`torch.autocast` for this precision on `device` (a no-op context when off)."""
        import torch

        return torch.autocast(torch.device(device).type, dtype=self.dtype, enabled=self.autocast)


DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps (auto: a GPU where there is one)."


def resolve_device(requested: str, local_rank: int = 0):
    """auto | cpu | cuda | cuda:N | mps -> torch.device; LiverctlError when the asked device is absent.
    `local_rank` picks the GPU for plain `cuda` (DDP); `cuda:N` names one."""
    import torch

    requested = given = str(requested).lower()
    if requested.startswith("cuda:") and requested[5:].isdigit():
        requested, local_rank = "cuda", int(requested[5:])
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise LiverctlError(f"--device {given}: no CUDA device is visible (try --device cpu or auto)")
        if local_rank >= torch.cuda.device_count():
            visible = plural(torch.cuda.device_count(), "CUDA device")
            raise LiverctlError(f"--device cuda:{local_rank}: only {visible} visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if requested == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise LiverctlError("--device mps: Apple MPS is not available here (try --device cpu or auto)")
        return torch.device("mps")
    if requested == "cpu":
        return torch.device("cpu")
    raise LiverctlError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {quoted(requested)}")


def resolve_precision(amp: str, device) -> Precision:
    """train.amp (auto | bf16 | fp16 | off) for this device. auto: CUDA bf16 where the GPU has it natively
    (compute capability 8.0 on) else fp16; CPU and MPS off (CPU bf16 autocast is slower than float32 on most
    CPUs; ask for it with amp=bf16). An explicit bf16 is refused only on a GPU that cannot even emulate it."""
    import torch

    if amp == "auto":
        if device.type == "cuda":
            return Precision("bf16" if native_bf16() else "fp16")
        return Precision("off")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LiverctlError("train.amp=bf16: this GPU does not support bfloat16; use fp16 or auto")
    if amp in ("bf16", "fp16", "off"):
        return Precision(amp)
    raise LiverctlError(f"train.amp must be auto, bf16, fp16 or off, got {quoted(amp)}")


def native_bf16() -> bool:
    """Whether the current CUDA device computes in bfloat16 itself. torch's `is_bf16_supported()` also says
    yes where bfloat16 is only emulated (a T4 or P100, Kaggle's GPUs: compute capability 7.5 / 6.0, whose
    tensor cores, where there are any, take fp16 only), where autocast to it gains nothing over float32."""
    import torch

    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch before the argument (2.3), unpinned for Kaggle's builds: it counted no emulation
        return torch.cuda.is_bf16_supported()


def precision_note(precision: Precision, device) -> str | None:
    """A remark for the user about a precision that works but is a poor choice on this device, else None."""
    if precision.mode == "bf16" and device.type == "cuda" and not native_bf16():
        return ("train.amp=bf16 on a GPU without native bfloat16 (compute capability below 8.0, a T4 or P100): "
                "PyTorch emulates it, with no tensor cores for it and no gain over float32; use amp=fp16 (what auto "
                "picks here)")
    if precision.mode == "fp16" and device.type == "cpu":
        return (
            "train.amp=fp16 on the CPU: PyTorch has no fast float16 kernels there, so each step runs ~30x "
            "slower than in float32 (a ResNet18 U-Net, batch 8 at 64 px: 2.4 s against 0.08 s), and a signal "
            "waits for the step in flight; use amp=off (what auto picks on the CPU) or bf16, unless you are "
            "testing the fp16 path"
        )
    return None


def inference_precision(amp: str, device) -> Precision:
    """Precision for prediction: `resolve_precision` on CUDA; off on CPU and MPS whatever `amp` says
    (autocast there is slower than float32 for this model)."""
    import torch

    if torch.device(device).type != "cuda":
        if amp not in ("auto", "bf16", "fp16", "off"):
            raise LiverctlError(f"amp must be auto, bf16, fp16 or off, got {quoted(amp)}")
        return Precision("off")
    return resolve_precision(amp, torch.device(device))


def cuda_memory_fields(device) -> dict:
    """`gpu_mem_gb` / `gpu_mem_peak_gb` (torch's allocated bytes, GiB) for `step` events on CUDA; {} elsewhere."""
    if device.type != "cuda":
        return {}
    import torch

    gib = 2**30
    return {
        "gpu_mem_gb": round(torch.cuda.memory_allocated(device) / gib, 3),
        "gpu_mem_peak_gb": round(torch.cuda.max_memory_allocated(device) / gib, 3),
    }


def out_of_memory(exc: BaseException, what: str, advice: str) -> LiverctlError | None:
    """torch's out-of-memory error (`torch.OutOfMemoryError`: CUDA's, where a batch does not fit the GPU) as one
    line, "`what` ran out of memory (what torch asked for, of how much was free); `advice`", instead of a
    traceback; None for any other error."""
    import torch

    if not isinstance(exc, torch.cuda.OutOfMemoryError):  # also torch.OutOfMemoryError in torch 2.11 (one class)
        return None
    said = first_line(exc, 400)  # torch's goes on with allocator advice after "... of which 1.20 GiB is free."
    account = re.match(r"(CUDA out of memory\. .*? is free\.)", said)
    return LiverctlError(f"{what} ran out of memory ({account.group(1) if account else said}); {advice}")


@contextlib.contextmanager
def out_of_memory_in_one_line(what: str, advice: str) -> Iterator[None]:
    """The body's out-of-memory error (`out_of_memory`) raised as its one line; anything else as it is."""
    try:
        yield
    except Exception as exc:
        failure = out_of_memory(exc, what, advice)
        if failure is None:
            raise
        raise failure from None


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread for the body, its own count back afterwards: for work that only moves
    memory (loading a checkpoint's weights, checking them, a model's copy). Two threads meet at a barrier in
    every operation, which costs when other processes hold the cores: a demo checkpoint's load and check took
    2.8-3.6 s on 2 threads of a 2-core machine running two busy loops, 2.6-2.7 s on one (BENCHMARKS.md, "Loading
    a checkpoint"); on free cores no difference was measured."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
