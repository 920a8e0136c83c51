"""`liverctl.infer.cpu`: the thread count chosen by timing, the channels-last model copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from liverctl.infer import cpu
from liverctl.infer.cpu import ThreadTuner, cpu_model, thread_candidates, tuned_threads
from liverctl.infer.predict import RunModel, predict_case_probabilities


def _feed(tuner: ThreadTuner, seconds: dict[int, float], slices: int) -> list[int]:
    """Let the tuner choose `slices` times, each batch of one slice taking `seconds[threads]`."""
    chosen = []
    for _ in range(slices):
        threads = tuner.choose()
        tuner.record(threads, seconds[threads])
        chosen.append(threads)
    return chosen


def test_the_tuner_tries_each_count_in_turns_then_keeps_the_fastest():
    tuner = ThreadTuner((2, 1), probes=3, every=10)
    assert _feed(tuner, {2: 0.9, 1: 0.3}, 6) == [2, 1, 2, 1, 2, 1]
    assert _feed(tuner, {2: 0.9, 1: 0.3}, 10) == [1] * 10
    # after `every` slices the other count is tried once more; still slower, so back to the fastest
    assert _feed(tuner, {2: 0.9, 1: 0.3}, 3) == [2, 1, 1]


def test_the_tuner_follows_a_load_that_comes_and_goes():
    tuner = ThreadTuner((2, 1), probes=3, every=4)
    _feed(tuner, {2: 0.3, 1: 0.6}, 6)  # idle: two threads win
    assert tuner.best == 2
    busy = {2: 2.8, 1: 0.7}  # other processes take the cores: two threads wait on each other
    chosen = _feed(tuner, busy, 12)
    assert chosen[-8:].count(1) >= 6 and tuner.best == 1
    chosen = _feed(tuner, {2: 0.3, 1: 0.6}, 20)  # idle again: a re-check finds two threads fast again
    assert tuner.best == 2 and chosen[-8:].count(2) >= 6


def test_a_single_count_is_never_timed_against_anything():
    tuner = ThreadTuner((3,))
    assert _feed(tuner, {3: 1.0}, 5) == [3] * 5


def test_thread_candidates():
    before = torch.get_num_threads()
    try:
        assert thread_candidates(3) == (3,)
        torch.set_num_threads(4)
        assert thread_candidates(0) == (4, 2, 1)
        torch.set_num_threads(1)
        assert thread_candidates(0) == (1,)
    finally:
        torch.set_num_threads(before)


def test_tuned_threads_sets_the_count_for_the_body_and_restores_it():
    before = torch.get_num_threads()
    tuner = ThreadTuner((before + 1, 1), probes=1)
    inside = []
    with tuned_threads(tuner, 2):
        inside.append(torch.get_num_threads())
    assert inside == [before + 1] and torch.get_num_threads() == before
    assert len(tuner.seconds[before + 1]) == 1
    with pytest.raises(RuntimeError), tuned_threads(tuner, 1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("model failed")
    assert torch.get_num_threads() == before and len(tuner.seconds[1]) == 0  # a failed batch is no timing
    with tuned_threads(None, 1):  # CUDA: nothing changes
        assert torch.get_num_threads() == before


def _small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 1, 3, padding=1),
    ).eval()


def test_cpu_model_is_a_channels_last_copy_made_once_and_leaves_the_run_model_alone():
    net = _small_net()
    run = RunModel(run_dir=__import__("pathlib").Path("runs/x"), model=net, cfg={})
    copy = cpu_model(run)
    assert copy is not net and cpu_model(run) is copy
    assert copy[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net[0].weight.is_contiguous() and not net[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(copy(x.contiguous(memory_format=torch.channels_last)), net(x), atol=1e-5, rtol=0)
    run.model = _small_net()  # a new model gets a new copy
    assert cpu_model(run) is not copy
    plain = lambda t: t  # noqa: E731 - not a torch module: used as it is
    assert cpu_model(RunModel(run_dir=run.run_dir, model=plain, cfg={})) is plain


def test_the_channels_last_copy_is_made_on_one_torch_thread():
    """A copy moves memory: it runs on one torch thread (device.one_torch_thread), torch's own count is back
    afterwards."""
    threads: list[int] = []

    class Spy(torch.nn.Conv2d):
        def _apply(self, fn, recurse=True):
            threads.append(torch.get_num_threads())
            return super()._apply(fn, recurse)

    run = RunModel(run_dir=__import__("pathlib").Path("runs/x"), model=Spy(3, 4, 3), cfg={})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cpu_model(run)
        assert threads and set(threads) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("channels_last", [False, True])
def test_cpu_prediction_matches_the_model_on_contiguous_inputs(monkeypatch, channels_last):
    from liverctl.infer import predict

    monkeypatch.setattr(predict, "_normalize", lambda stack, cfg, stats: stack)
    net = _small_net()
    run = RunModel(run_dir=__import__("pathlib").Path("runs/x"), model=net, cfg={"data": {"context": 1, "input_size": 16}})
    volume = np.random.default_rng(0).random((16, 16, 5)).astype(np.float32)
    got = predict_case_probabilities(run, volume, {}, tta="hflip", cpu_threads=1, channels_last=channels_last)
    want = np.empty_like(got)
    with torch.inference_mode():
        for z in range(5):
            x = torch.from_numpy(predict.stack_at(volume, z, 1))[None]
            p = (torch.sigmoid(net(x)) + torch.sigmoid(net(x.flip(-1))).flip(-1)) / 2
            want[..., z] = p[0, 0].numpy()
    if channels_last:
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert run.cpu_copy is not None
    else:  # the model as training's validation runs it: the very same numbers
        np.testing.assert_array_equal(got, want)
        assert run.cpu_copy is None
    assert cpu._TUNERS[((1,), predict._pass_cost_key(run))].seconds[1]  # the fixed count went through the tuner (timed, never switched)
