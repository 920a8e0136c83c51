from pathlib import Path

import numpy as np
import pytest
import torch

from liverctl.errors import LiverctlError
from liverctl.infer import predict
from liverctl.infer.predict import (
    RunModel,
    parse_tta,
    predict_case_probabilities,
    predict_cases,
    tta_probabilities,
)


def identity_model(x):
    """Logits = the centre channel: pointwise, hence equivariant under every flip. (N,C,H,W) -> (N,1,H,W)."""
    c = x.shape[1] // 2
    return x[:, c : c + 1]


class RampModel(torch.nn.Module):
    """Not flip-equivariant: adds a fixed ramp along W, so TTA views differ and undo errors show."""

    def forward(self, x):
        ramp = torch.linspace(-2, 2, x.shape[-1]).view(1, 1, 1, -1)
        return identity_model(x) + ramp


@pytest.mark.parametrize("mode", ["none", "hflip", "vflip", "hflip+vflip", "flips"])
def test_tta_of_identity_model_returns_its_input(mode):
    x = torch.randn(3, 3, 8, 6)
    probs = tta_probabilities(identity_model, x, mode)
    assert probs.shape == (3, 1, 8, 6)
    torch.testing.assert_close(probs, torch.sigmoid(x[:, 1:2]))


def test_hflip_tta_undoes_the_flip_exactly():
    x = torch.randn(2, 1, 5, 7)
    ramp = torch.linspace(-2, 2, 7).view(1, 1, 1, -1)
    # view 1: the image; view 2: flip, predict, flip back -> the ramp ends up mirrored
    expected = (torch.sigmoid(x + ramp) + torch.sigmoid(x + ramp.flip(-1))) / 2
    torch.testing.assert_close(tta_probabilities(RampModel(), x, "hflip"), expected)
    # vflip does not touch W, so the ramp model is equivariant under it
    torch.testing.assert_close(tta_probabilities(RampModel(), x, "vflip"), torch.sigmoid(x + ramp))


class SlopeModel(torch.nn.Module):
    """Not equivariant under any flip: a ramp along H and a steeper one along W, added to the centre channel."""

    def forward(self, x):
        return identity_model(x) + _slopes(x.shape[-2], x.shape[-1])


def _slopes(h: int, w: int) -> torch.Tensor:
    return torch.linspace(-1, 1, h).view(1, 1, -1, 1) + torch.linspace(-3, 3, w).view(1, 1, 1, -1)


@pytest.mark.parametrize(
    "mode, views",
    [
        ("vflip", [(), (-2,)]),
        ("hflip+vflip", [(), (-1,), (-2,)]),
        ("flips", [(), (-1,), (-2,), (-2, -1)]),
    ],
)
def test_multi_view_tta_undoes_every_flip(mode, views):
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    slopes = _slopes(5, 7)
    # each view: flip, predict, flip back -> the image term is back in place, the slopes end up flipped
    expected = sum(torch.sigmoid(x[:, 1:2] + (slopes.flip(dims) if dims else slopes)) for dims in views) / len(views)
    torch.testing.assert_close(tta_probabilities(SlopeModel(), x, mode), expected)
    others = {m: tta_probabilities(SlopeModel(), x, m) for m in ("none", "hflip", "vflip", "hflip+vflip", "flips")}
    assert all(not torch.allclose(others[mode], p) for m, p in others.items() if m != mode)  # every mode differs


@pytest.mark.parametrize("typed, hint", [
    ("hflp", "'hflip'"), ("h-flip", "'hflip'"),
    # as near 'hflip', 'vflip' and 'flips', 'flip' was offered 'vflip' alone (difflib breaks ties by name, Z-A)
    ("flip", "'hflip' or 'flips'"), ("FLIP", "'hflip' or 'flips'"), ("hflips", "'hflip' or 'flips'"),
    ("vflips", "'flips' or 'vflip'"),
])
def test_unknown_tta_suggests_the_nearest_most_used_first(typed, hint):
    with pytest.raises(LiverctlError) as info:
        parse_tta(typed)
    assert str(info.value) == (f"unknown TTA mode {typed!r} (did you mean {hint}?); valid: none, hflip, vflip, "
                               "hflip+vflip, flips")


def test_unknown_tta_far_from_every_mode_lists_them_alone():
    with pytest.raises(LiverctlError) as info:
        parse_tta("rotate90")
    assert str(info.value) == "unknown TTA mode 'rotate90'; valid: none, hflip, vflip, hflip+vflip, flips"


class FakeStore:
    """The part of `LiverStore` that prediction uses: meta(case)["shape"/"stats"] and read_slice."""

    def __init__(self, volumes):
        self.volumes = volumes

    def meta(self, case_id):
        return {"shape": list(self.volumes[case_id].shape), "stats": {}}

    def read_slice(self, case_id, z):
        return self.volumes[case_id][..., z].astype(np.float16)


@pytest.fixture
def passthrough_normalize(monkeypatch):
    monkeypatch.setattr(predict, "_normalize", lambda stack, cfg, stats: np.asarray(stack, dtype=np.float32))


def _run(input_size, context=1, model=identity_model):
    cfg = {"data": {"context": context, "input_size": input_size}}
    return RunModel(run_dir=Path("runs/x"), model=model, cfg=cfg)


@pytest.mark.parametrize("batching", [(1, False), (3, True)], ids=["cpu", "cuda-like batches + prefetch"])
def test_case_probabilities_keep_slice_order_and_own_size(passthrough_normalize, monkeypatch, batching):
    # each slice constant = its own index scaled, so any mix-up of z shows
    if batching[1]:  # the CUDA way (batches of batch_size, next one prepared on a thread), here on the CPU
        monkeypatch.setattr(predict, "cpu_batching", lambda batch_size, device: (batch_size, True))
    vol = np.broadcast_to(np.linspace(-1, 1, 7, dtype=np.float32), (10, 6, 7)).copy()
    seen = []
    probs = predict_case_probabilities(_run(16), vol, {}, tta="hflip", batch_size=3, on_slices=seen.append)
    assert probs.shape == (10, 6, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-vol)), atol=1e-5)
    assert seen == ([3, 3, 1] if batching[1] else [1] * 7)


def test_a_batch_normalises_each_of_its_slices_once_and_cuts_the_stacks_as_one_by_one(monkeypatch):
    """Neighbouring stacks share slices: a batch normalises each slice it holds once (14 planes for 10 slices
    in batches of 4 at context 1), not once per stack holding it (30), and predicts what stacks cut, normalised
    and resized one at a time predict, to the bit."""
    cfg = {"data": {"context": 1, "input_size": 8, "normalize": "window", "window": [-100.0, 200.0]}}
    run = RunModel(run_dir=Path("runs/x"), model=RampModel(), cfg=cfg)
    volume = np.random.default_rng(0).uniform(-300, 400, (12, 10, 10)).astype(np.float16)
    planes, real = [], predict._normalize

    def counting(stack, cfg, stats):
        planes.append(len(stack))
        return real(stack, cfg, stats)

    monkeypatch.setattr(predict, "_normalize", counting)
    one_by_one = predict_case_probabilities(run, volume, {})  # the cpu path: a batch of one stack
    monkeypatch.setattr(predict, "cpu_batching", lambda batch_size, device: (batch_size, False))
    planes.clear()
    batched = predict_case_probabilities(run, volume, {}, batch_size=4)
    assert sum(planes) == 5 + 6 + 3
    np.testing.assert_array_equal(batched, one_by_one)
    for z in (0, 4, 9):  # and one stack as validation cuts it
        stack = predict._resize(real(predict.stack_at(volume, z, 1), cfg, {}), 8)
        expected = predict.probabilities_at(
            tta_probabilities(run.model, torch.from_numpy(stack[None])), (12, 10))[0, 0].numpy()
        np.testing.assert_array_equal(batched[..., z], expected)


def test_cpu_predicts_one_slice_per_pass_without_a_prefetch_thread_and_cuda_batches():
    import torch

    assert predict.cpu_batching(16, "cpu") == (1, False)
    assert predict.cpu_batching(16, torch.device("cpu")) == (1, False)
    assert predict.cpu_batching(16, "cuda") == (16, True)
    assert predict.cpu_batching(8, torch.device("cuda", 1)) == (8, True)


def test_resize_round_trip_keeps_a_structure_in_place(passthrough_normalize):
    vol = np.full((40, 24, 2), -8.0, np.float32)
    vol[10:30, 4:12, :] = 8.0
    probs = predict_case_probabilities(_run(32), vol, {})
    mask = probs > 0.5
    assert mask.shape == vol.shape
    assert mask[12:28, 5:11, :].all() and not mask[:8].any() and not mask[:, 14:].any()


def test_predict_cases_streams_ensemble_mean(passthrough_normalize):
    vols = {"a": np.zeros((4, 4, 3), np.float32), "b": np.zeros((6, 5, 2), np.float32)}

    def shifted(t):
        return identity_model(t) + 2.0

    runs = [_run(8), _run(8, context=0, model=shifted)]
    out = dict(predict_cases(runs, FakeStore(vols), ["b", "a"], tta="none"))
    assert list(out) == ["b", "a"]
    expected = (0.5 + 1 / (1 + np.exp(-2.0))) / 2
    for case, vol in vols.items():
        assert out[case].shape == vol.shape
        np.testing.assert_allclose(out[case], expected, atol=1e-6)


def _tiny_run(name: str, seed: int, *overrides: str) -> RunModel:
    """A small untrained conv net (not flip-equivariant) with the demo config and `overrides`, in eval mode."""
    from liverctl.config import in_channels, resolve_config

    cfg = resolve_config("demo", ["model.encoder_weights='none'", *overrides])
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(in_channels(cfg), 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 1, 3, padding=1))
    return RunModel(run_dir=Path("runs") / name, model=model.eval(), cfg=cfg)


@pytest.mark.parametrize("batching", [(1, False), (5, True)], ids=["cpu", "cuda-like batches + prefetch"])
def test_an_ensemble_predicts_what_its_runs_predict_one_by_one_averaged(tiny_store, monkeypatch, batching):
    """Runs that share a data config (two folds: input 64) share each prepared batch, a run of another input size
    (32) gets its own, and the ensemble's mean is, to the bit, each run's own prediction added in run order and
    divided by their number."""
    from liverctl.data.store import LiverStore

    monkeypatch.setattr(predict, "cpu_batching", lambda batch_size, device: batching)
    store = LiverStore.open(tiny_store)
    case = store.case_ids("test")[:1]
    runs = [_tiny_run("f0", 0, "data.input_size=64"), _tiny_run("small", 1, "data.input_size=32"),
            _tiny_run("f1", 2, "data.input_size=64")]
    assert len({predict.preparation_key(run.cfg) for run in runs}) == 2
    # one thread: the tuner's choice of a count (cpu_threads=0) changes a probability's last bit, between any two
    # predictions of one run as between these
    ((_, together),) = predict_cases(runs, store, case, tta="hflip", amp="off", cpu_threads=1)
    alone = [dict(predict_cases([run], store, case, tta="hflip", amp="off", cpu_threads=1))[case[0]] for run in runs]
    total = alone[0].copy()
    for probs in alone[1:]:
        np.add(total, probs, out=total)
    np.testing.assert_array_equal(together, total / len(runs))
    assert not np.array_equal(alone[0], alone[2])  # the folds' models differ: each was used


def test_a_weighted_ensemble_is_each_runs_own_prediction_times_its_weight_added_in_run_order(tiny_store):
    from liverctl.data.store import LiverStore

    store = LiverStore.open(tiny_store)
    case = store.case_ids("test")[:1]
    runs = [_tiny_run("f0", 0, "data.input_size=64"), _tiny_run("small", 1, "data.input_size=32")]
    weights = [0.75, 0.25]
    ((_, together),) = predict_cases(runs, store, case, weights=weights, tta="hflip", amp="off", cpu_threads=1)
    alone = [dict(predict_cases([run], store, case, tta="hflip", amp="off", cpu_threads=1))[case[0]] for run in runs]
    np.testing.assert_array_equal(together, alone[0] * np.float32(0.75) + alone[1] * np.float32(0.25))
    ((_, plain),) = predict_cases(runs, store, case, tta="hflip", amp="off", cpu_threads=1)
    assert not np.allclose(together, plain)  # the weights were used
    with pytest.raises(ValueError, match="1 weights for 2 runs"):
        list(predict_cases(runs, store, case, weights=[1.0]))


def test_runs_with_one_data_config_prepare_each_batch_once_for_every_model_and_flip(monkeypatch):
    """Each batch is normalised and resized once per data config (context, input size, window), not once per run,
    and not once per TTA flip: 3 runs, 2 configs, 4 flips -> 2 preparations a batch."""
    prepared, normalize, resize = [], predict._normalize, predict._resize
    monkeypatch.setattr(predict, "_normalize", lambda stack, cfg, stats: prepared.append(("norm", len(stack)))
                        or normalize(stack, cfg, stats))
    monkeypatch.setattr(predict, "_resize", lambda stack, size: prepared.append(("resize", size)) or resize(stack, size))
    data = {"context": 1, "normalize": "window", "window": [-100.0, 200.0]}
    runs = [RunModel(run_dir=Path(f"runs/{name}"), model=RampModel(), cfg={"data": {**data, "input_size": size}})
            for name, size in (("f0", 8), ("f1", 8), ("other", 6))]
    volume = np.random.default_rng(0).uniform(-300, 400, (10, 10, 5)).astype(np.float32)
    seen = []
    list(predict_cases(runs, FakeStore({"a": volume}), ["a"], tta="flips", on_slices=seen.append))
    assert [kind for kind, _ in prepared].count("norm") == 5 * 2  # 5 batches of one slice, 2 configs
    assert sorted(size for kind, size in prepared if kind == "resize") == [6] * 5 + [8] * 5
    assert seen == [1] * 15  # progress: every slice once per run


def test_thread_counts_are_timed_per_architecture_and_input_size_not_across_an_ensembles_models(monkeypatch):
    """The runs of an ensemble take turns batch by batch: each kind of pass (architecture, input size) has its own
    `ThreadTuner`, so that no thread count is judged by a cheaper model's times than the others'."""
    used, real = [], predict.tuned_threads

    def recording(tuner, slices):
        used.append(tuner)
        return real(tuner, slices)

    monkeypatch.setattr(predict, "tuned_threads", recording)
    data = {"context": 1, "normalize": "window", "window": [-100.0, 200.0]}
    runs = [RunModel(run_dir=Path(f"runs/{name}"), model=RampModel(), cfg={"data": {**data, "input_size": size}})
            for name, size in (("f0", 8), ("other", 6), ("f1", 8))]
    volume = np.zeros((10, 10, 4), np.float32)
    list(predict_cases(runs, FakeStore({"a": volume}), ["a"], cpu_threads=0))
    f0, other, f1 = (used[r::3] for r in range(3))
    assert len(used) == 12 and len({id(t) for t in f0 + f1}) == 1 and len({id(t) for t in other}) == 1
    assert other[0] is not f0[0]


def test_the_data_config_of_a_run_is_its_context_input_size_and_normalisation():
    data = {"context": 1, "normalize": "window", "window": [-100.0, 200.0], "input_size": 8}
    key = predict.preparation_key({"data": data})
    assert key != predict.preparation_key({"data": {**data, "context": 2}})
    assert key != predict.preparation_key({"data": {**data, "input_size": 16}})
    assert key != predict.preparation_key({"data": {**data, "window": [-50.0, 150.0]}})
    minmax = {"data": {**data, "normalize": "minmax"}}  # minmax ignores the window
    assert predict.preparation_key(minmax) == predict.preparation_key({"data": {**minmax["data"], "window": [0, 1]}})


def test_stack_at_matches_store_read_stack(tiny_store):
    from liverctl.data.store import LiverStore
    from liverctl.infer.predict import read_case_volume, stack_at

    store = LiverStore.open(tiny_store)
    case = store.case_ids("test")[0]
    volume = read_case_volume(store, case)
    assert np.moveaxis(volume, -1, 0).flags.c_contiguous  # each slice one block: stacks copy whole slices
    depth = volume.shape[2]
    for z in (0, 1, depth // 2, depth - 1):
        for context in (0, 1, 2):
            got = stack_at(volume, z, context)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, store.read_stack(case, z, context))


@pytest.mark.gpu
def test_amp_on_cuda_matches_float32(gpu_device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1)
    ).to(gpu_device).eval()
    x = torch.randn(4, 3, 64, 64, device=gpu_device)
    exact = tta_probabilities(model, x, "flips", amp="off")
    for amp in ("auto", "fp16"):
        mixed = tta_probabilities(model, x, "flips", amp=amp)
        assert mixed.dtype == torch.float32
        torch.testing.assert_close(mixed, exact, atol=2e-2, rtol=0)


def test_predict_cases_hands_over_each_case_holding_nothing_else_of_it(passthrough_normalize):
    """While the caller holds a case's probabilities (submit thresholds, cleans and encodes them), the generator
    holds neither the case's HU volume nor a second float32 volume (the ensemble's mean divided out of place); and
    making them took the probabilities, the HU volume and a batch, not more. A 512 x 512 x 900 case and two runs:
    submit's peak 4.36 GB before, with 0.47 GB of HU volume and 0.94 GB of probabilities each held twice."""
    import tracemalloc

    store = FakeStore({"a": np.zeros((96, 96, 40), np.float32)})
    runs = [_run(8), _run(8)]
    hu_bytes = 96 * 96 * 40 * 2  # read_case_volume's float16 volume
    list(predict_cases(runs, FakeStore({"w": np.zeros((12, 12, 2), np.float32)}), ["w"], tta="none"))  # imports done
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for case, probs in predict_cases(runs, store, ["a"], tta="none"):
            held, peak = (m - base for m in tracemalloc.get_traced_memory())
            assert case == "a" and probs.dtype == np.float32
            expected = probs.nbytes
            del probs
    finally:
        tracemalloc.stop()
    assert held < 1.1 * expected
    assert peak < expected + hu_bytes + 0.5 * expected  # a batch: 3 slices; before, another 1.0 * expected
