"""How prediction uses a CPU: how many threads, which memory layout, how many slices per pass.

What was measured (notes of the infer-home branch; v5, 512 x 512, hflip TTA, 2 shared cores):
- threads: torch's OpenMP threads meet at a barrier in every layer, so while other processes hold the
  cores, two threads ran 3-5x slower than one; on an idle machine two run about 1.8x faster than one. No
  fixed count is right on a machine someone else also uses, so `ThreadTuner` times the candidate counts
  on the first slices, keeps the fastest, and keeps checking (`infer.cpu_threads = 0`; N fixes it).
- layout: the convolutions ran about 1.5x faster on channels-last (NHWC) weights and inputs
  (`cpu_model`, `infer.cpu_channels_last`, on by default for `submit`). Its probabilities differ from
  the contiguous model's by ~1e-7, so a voxel exactly at the threshold may differ from what training's
  validation predicted; `predict_case_probabilities` itself defaults to the contiguous model, which
  tests/train/test_train.py holds exactly equal to validation.
- batch: one slice per pass, the flips of TTA as passes of one slice; a batch of two (two slices, or a
  slice and its flip) was 1.3x slower per slice. The preparation (normalise, 2.5D stack) costs about
  1.5 ms a slice, under 0.5% of the model's time.
CUDA is untouched by all of this: batches of `infer.batch_size` under AMP (`liverctl.infer.predict`).
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from liverctl.infer.predict import RunModel

CPU_BATCH = 1  # slices per forward pass on the CPU
PROBES = 3  # timings kept per thread count; the median of these decides
RETUNE_EVERY = 64  # slices between re-checks of the counts not in use


class ThreadTuner:
    """Chooses torch's intra-op thread count for the next slices from timings of each candidate count.

    Each candidate is first tried `probes` times in turns; after that the count with the lowest median
    seconds per slice is used, and `every` slices after the last try the others are tried once more, so
    that a load that comes or goes on the machine changes the choice. Only the last `probes` timings of
    a count count, so the count in use follows the machine at once.
    """

    def __init__(self, candidates: Sequence[int], probes: int = PROBES, every: int = RETUNE_EVERY):
        self.candidates = tuple(dict.fromkeys(max(1, int(c)) for c in candidates))
        self.every = every
        self.seconds: dict[int, deque[float]] = {c: deque(maxlen=probes) for c in self.candidates}
        self._pending = list(self.candidates) * probes if len(self.candidates) > 1 else []
        self._since_check = 0  # slices since the last try of another count
        self._probing = False

    @property
    def best(self) -> int:
        timed = [c for c in self.candidates if self.seconds[c]]
        if not timed:
            return self.candidates[0]
        return min(timed, key=lambda c: statistics.median(self.seconds[c]))

    def choose(self) -> int:
        """The thread count for the next batch."""
        if not self._pending and len(self.candidates) > 1 and self._since_check >= self.every:
            self._pending = [c for c in self.candidates if c != self.best]
        self._probing = bool(self._pending)
        return self._pending.pop(0) if self._pending else self.best

    def record(self, threads: int, seconds_per_slice: float, slices: int = 1) -> None:
        """The time one batch of `slices` slices took at `threads` threads."""
        self.seconds[threads].append(seconds_per_slice)
        self._since_check = 0 if self._probing else self._since_check + slices


_TUNERS: dict[tuple[tuple[int, ...], Hashable], ThreadTuner] = {}


def thread_candidates(cpu_threads: int) -> tuple[int, ...]:
    """`infer.cpu_threads` -> the counts to try: N alone, or for 0 torch's own count, half of it and one."""
    import torch

    if cpu_threads > 0:
        return (int(cpu_threads),)
    n = torch.get_num_threads()
    return tuple(dict.fromkeys((n, max(1, n // 2), 1)))


def thread_tuner(cpu_threads: int = 0, work: Hashable = None) -> ThreadTuner:
    """The process's tuner for these candidates and this `work` (what one pass costs: an ensemble's runs of
    another architecture or input size take their own, so that no count is timed on a cheaper model than the
    others): what it learnt on one case serves the next."""
    key = (thread_candidates(cpu_threads), work)
    if key not in _TUNERS:
        _TUNERS[key] = ThreadTuner(key[0])
    return _TUNERS[key]


@contextlib.contextmanager
def tuned_threads(tuner: ThreadTuner | None, slices: int) -> Iterator[None]:
    """Run the body (one forward batch of `slices` slices) at the tuner's thread count, and time it.

    torch's own thread count is restored afterwards. `tuner=None` (CUDA) runs the body as it is.
    """
    if tuner is None:
        yield
        return
    import torch

    threads, before = tuner.choose(), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        yield
        tuner.record(threads, (time.perf_counter() - start) / max(1, slices), slices)
    finally:
        torch.set_num_threads(before)


def cpu_model(run: RunModel):
    """`run.model` as a channels-last copy for the CPU, made once per run and kept in `run.cpu_copy` (the run's own
    model is left as it is: another caller may share it). A model that is not a torch module is used as it is."""
    import torch

    if not isinstance(run.model, torch.nn.Module):
        return run.model
    from liverctl.device import one_torch_thread

    cached = run.cpu_copy
    if cached is None or cached[0] is not run.model:
        with one_torch_thread():  # a copy: memory work
            cached = (run.model, copy.deepcopy(run.model).to(memory_format=torch.channels_last))
        run.cpu_copy = cached
    return cached[1]
