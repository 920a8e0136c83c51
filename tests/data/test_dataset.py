"""Dataset over the store: normalisation, 2D/2.5D stacks, augmentation seeds, samplers, loaders."""

from __future__ import annotations

import signal
from collections import namedtuple

import numpy as np
import pytest
import torch

from liverctl.config import resolve_config
from liverctl.data import dataset as ds
from liverctl.data import loaders
from liverctl.data.store import LiverStore

torch.set_num_threads(1)


def cfg_for(store, *more):
    return resolve_config("demo", [f'data.store="{store}"', "data.input_size=64", *more])


def worker_loader(tiny_store, *, augment_on="cpu", step_on="cpu", samples=8, batch=4, workers=2):
    """A training set of fold 0 for a step on `step_on` and its loader with `workers` processes."""
    store = LiverStore.open(tiny_store)
    rows, _ = ds.split_rows(store, 0)
    data = ds.SliceDataset(store, rows, cfg_for(tiny_store), augment_on=augment_on, device=torch.device(step_on))
    sampler = ds.EpochSampler(data.liver, 3.0, seed=0, num_samples=samples)
    return data, sampler, loaders.make_train_loader(data, sampler, batch, loaders.LoaderPlan(workers, None, False))


def test_window_normalisation_maps_the_window_to_0_1_and_clips():
    cfg = resolve_config("v3")
    out = normalize_hu([-1000.0, -100.0, 50.0, 200.0, 3000.0], cfg, {})
    assert out.dtype == np.float32
    assert out.ravel().tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


def test_minmax_normalisation_uses_the_volume_stats_not_the_slice():
    cfg = resolve_config("v1")
    out = normalize_hu([-500.0, 0.0, 500.0], cfg, {"min": -1000.0, "max": 1000.0})
    assert out.ravel().tolist() == pytest.approx([0.25, 0.5, 0.75])


def normalize_hu(values, cfg, stats):
    return ds.normalize(np.asarray(values, dtype=np.float32).reshape(1, 1, -1), cfg, stats)


def test_resize_stack_keeps_channels_first():
    stack = np.random.default_rng(0).random((3, 100, 80), dtype=np.float32)
    assert ds.resize_stack(stack, 64).shape == (3, 64, 64)
    assert ds.resize_stack(stack[:1], 32).shape == (1, 32, 32)


@pytest.mark.parametrize("context", [0, 1, 2])
def test_items_have_2_context_plus_1_channels_and_a_binary_mask(tiny_store, context):
    store = LiverStore.open(tiny_store)
    cfg = cfg_for(tiny_store, f"data.context={context}", "data.augment='none'")
    rows, _ = ds.split_rows(store, 0)
    data = ds.SliceDataset(store, rows, cfg)
    image, mask = data[5]
    assert image.shape == (2 * context + 1, 64, 64) and image.dtype == torch.float32
    assert mask.shape == (1, 64, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}
    case = data.case_ids[int(data.case_codes[5])]
    centre = ds.normalize(store.read_slice(case, int(data.z[5]))[None], cfg, {})[0]
    assert np.allclose(image[context].numpy(), centre, atol=1e-3)  # the centre channel is slice z itself


def test_augmentation_is_a_function_of_the_sample_seed(tiny_store):
    store = LiverStore.open(tiny_store)
    cfg = cfg_for(tiny_store, "data.augment='distort'")
    rows, _ = ds.split_rows(store, 0)
    data = ds.SliceDataset(store, rows, cfg)
    row = int(np.flatnonzero(data.liver)[0])
    a, b = data[(row, 11)], data[(row, 11)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert any(not torch.equal(a[0], data[(row, s)][0]) for s in range(12, 20))


def test_sampler_is_deterministic_per_epoch_and_oversamples_liver():
    liver = np.zeros(1000, dtype=bool)
    liver[:100] = True
    sampler = ds.EpochSampler(liver, 5.0, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    assert first == list(sampler)
    sampler.set_epoch(1)
    assert first != list(sampler)
    fraction = np.mean([liver[p] for p, _ in first])
    assert fraction > 0.25  # 100 * 5 / (100 * 5 + 900) = 0.36 expected, 0.1 without oversampling
    uniform = ds.EpochSampler(liver, 1.0, seed=3)
    assert sorted(p for p, _ in uniform) == list(range(1000))  # a permutation


def test_sampler_start_skips_what_was_seen_and_ranks_split_the_epoch():
    liver = np.zeros(10, dtype=bool)
    sampler = ds.EpochSampler(liver, 1.0, seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start=4)
    assert list(sampler) == full[4:]
    parts = [list(ds.EpochSampler(liver, 1.0, seed=0, rank=r, world=2)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 5
    assert sorted(p for part in parts for p, _ in part) == list(range(10))


def test_validation_batches_never_span_two_cases_and_split_cases_across_ranks(tiny_store):
    store = LiverStore.open(tiny_store)
    _, val_rows = ds.split_rows(store, 0)
    val = ds.ValidationDataset(store, val_rows, cfg_for(tiny_store))
    batches = val.case_batches(5)
    assert sorted(i for b in batches for i in b) == list(range(len(val)))
    assert all(len(set(val.case_codes[b].tolist())) == 1 for b in batches)
    image, mask, label, code, z = val[0]
    assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64) and label.dtype == torch.uint8
    ranks = [set(val.case_codes[i] for b in val.case_batches(5, r, 2) for i in b) for r in range(2)]
    assert not ranks[0] & ranks[1]


def test_empty_fold_is_a_clear_error(tiny_store):
    from liverctl.errors import LiverctlError

    store = LiverStore.open(tiny_store)
    with pytest.raises(LiverctlError, match="fold 9 has no training cases") as info:
        ds.split_rows(store, 9)
    # what to do, not only a Python list of the folds ("folds in the store: [2, 4]")
    first = min(f for f in store.folds().values() if f >= 0)
    assert str(info.value).endswith(f": choose one with --set data.fold={first}")
    # a fold below 0 the same ("data.fold must be one of the store's folds [0, 2], not -1")
    with pytest.raises(LiverctlError, match="^fold -1 is no fold; the store's training cases are in folds ") as info:
        ds.split_rows(store, -1)
    assert str(info.value).endswith(f": choose one with --set data.fold={first}")


def test_small_shm_falls_back_to_file_system_sharing_with_workers_kept(monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(loaders.shutil, "disk_usage", lambda p: usage(64 * 2**20, 0, 64 * 2**20))
    plan = loaders.plan_loader(2, batch_bytes=16 * 4 * 512 * 512 * 4, cuda=False)
    assert plan.sharing_strategy == "file_system" and plan.num_workers >= 1
    assert "/dev/shm" in plan.note and "--shm-size" in plan.note
    monkeypatch.setattr(loaders.shutil, "disk_usage", lambda p: usage(8 * 2**30, 0, 8 * 2**30))
    assert loaders.plan_loader(1, batch_bytes=1024, cuda=False) == loaders.LoaderPlan(1, None, False)


def test_num_workers_0_loads_in_this_process_the_same_batches_as_workers(tiny_store, monkeypatch):
    """data.num_workers=0 was planned as one worker process (plan_loader's floor of 1), where PyTorch's users
    expect 0 to load in the main process (debugging, notebooks where worker processes are fragile). Now no
    worker starts, and the batches (augmented on the CPU from each sample's seed) equal the workers'."""
    import os

    assert loaders.plan_loader(0, batch_bytes=1024, cuda=False) == loaders.LoaderPlan(0, None, False)
    with_workers = [dict(b) for b in worker_loader(tiny_store, workers=2)[2]]
    built_in = []
    original = ds.SliceDataset.batch
    monkeypatch.setattr(ds.SliceDataset, "batch", lambda self, items: built_in.append(os.getpid()) or original(self, items))
    data, _, loader = worker_loader(tiny_store, workers=loaders.plan_loader(0, 1024, cuda=False).num_workers)
    in_process = [dict(b) for b in loader]
    assert built_in == [os.getpid()] * len(in_process) == [os.getpid()] * 2  # every batch, here
    for ours, theirs in zip(in_process, with_workers, strict=True):
        for key in ("image", "mask", "seed", "norm"):
            assert torch.equal(ours[key], theirs[key]), key
        torch.testing.assert_close(data.finish(ours, "cpu"), data.finish(theirs, "cpu"), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("augment_on", "step_on", "handed_over"),
    [("cpu", "cuda", (torch.float16, torch.uint8)), ("device", "cuda", (torch.float16, torch.uint8)),
     ("device", "cpu", (torch.float16, torch.uint8)),
     ("cpu", "cpu", (torch.float32, torch.float32))],  # the model's own dtype where no copy to a GPU follows
)
def test_loader_with_worker_processes_hands_over_small_dtypes(tiny_store, augment_on, step_on, handed_over):
    data, sampler, loader = worker_loader(tiny_store, augment_on=augment_on, step_on=step_on)
    batches = list(loader)
    assert len(batches) == 2
    assert (batches[0]["image"].dtype, batches[0]["mask"].dtype) == handed_over
    image, mask = data.finish(batches[0], "cpu")
    assert image.shape == (4, 3, 64, 64) and image.dtype == torch.float32 and mask.shape == (4, 1, 64, 64)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    again = list(loader)  # persistent workers, same epoch: same samples
    assert torch.equal(batches[1]["image"], again[1]["image"])
    positions = [p for p, _ in sampler][:4]
    assert batches[0]["seed"].tolist() == [s for _, s in sampler][:4]
    one = data.batch(list(zip(positions, batches[0]["seed"].tolist(), strict=True)))
    assert torch.equal(one["image"], batches[0]["image"])  # workers or not, the same batch


def test_batch_bytes_is_what_a_worker_hands_over(tiny_store):
    """The /dev/shm check (`plan_loader`) sizes batches by the dtype and size really handed over."""
    store = LiverStore.open(tiny_store)
    cfg = cfg_for(tiny_store)  # 64 x 64 input, 3 channels
    rows, _ = ds.split_rows(store, 0)
    for augment_on, step_on, per_pixel in [("cpu", "cpu", 3 * 4 + 4), ("cpu", "cuda", 3 * 2 + 1),
                                            ("device", "cuda", 3 * 2 + 1)]:
        data = ds.SliceDataset(store, rows, cfg, augment_on=augment_on, device=torch.device(step_on))
        batch = data.batch([(0, 0), (1, 0)])
        handed_over = batch["image"].nbytes + batch["mask"].nbytes
        assert data.batch_bytes(2) == handed_over == 2 * per_pixel * 64 * 64, (augment_on, step_on)


def test_a_step_on_the_cpu_takes_the_workers_float32_batch_in_place_and_keeps_it_until_the_next(tiny_store):
    """No second pass over the batch in the training process, and no worker writes over the batch the step
    is using: its slot is freed only when the next batch is finished."""
    import time

    data, sampler, loader = worker_loader(tiny_store, samples=40)
    pairs = list(sampler)
    for n, batch in enumerate(loader):
        image, mask = data.finish(batch, "cpu")
        assert image.dtype == torch.float32 and image.data_ptr() == batch["image"].data_ptr()
        _, worker, slot = batch["slot"].tolist()
        assert worker >= 0 and int(data.slots.free[worker, slot]) == 0  # taken while the step uses it
        time.sleep(0.1)  # the workers run ahead meanwhile, into every slot that is free
        expected, _ = data.finish(data.batch(pairs[4 * n:4 * n + 4]), "cpu")  # the same batch, built here
        assert torch.equal(image, expected), f"batch {n} was written over while in use"
    assert n == 9


def test_device_path_reads_the_stored_values_and_normalises_like_the_cpu_path(tiny_store):
    store = LiverStore.open(tiny_store)
    cfg = cfg_for(tiny_store, "data.augment='none'")
    rows, _ = ds.split_rows(store, 0)
    dev = ds.SliceDataset(store, rows, cfg, augment_on="device")
    cpu = ds.SliceDataset(store, rows, cfg, augment_on="cpu")
    batch = dev.batch([(3, 1), (9, 2)])
    case = dev.case_ids[int(dev.case_codes[3])]
    assert np.array_equal(batch["image"][0].numpy(), store.read_stack(case, int(dev.z[3]), dtype=np.float16))
    a, b = dev.finish(batch, "cpu"), cpu.finish(cpu.batch([(3, 1), (9, 2)]), "cpu")
    assert torch.allclose(a[0], b[0], atol=1e-3) and torch.equal(a[1], b[1])


def test_seeded_augmentation_draws_each_transform_independently():
    """Regression: albumentations seeds all transforms alike, so flips only ever came with each other."""
    from liverctl.config import resolve_config
    from liverctl.data.augment_cpu import albumentations_pipeline, seed_augmentation

    cfg = resolve_config("demo", ["data.input_size=32", "data.augment='flip_rotate'"])
    aug = albumentations_pipeline(cfg, train=True)
    img = np.arange(32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3)
    mask = np.zeros((32, 32), np.uint8)
    outcomes = {"hflip only": 0, "untouched": 0}
    for seed in range(400):
        seed_augmentation(aug, seed)
        out = aug(image=img, mask=mask)["image"]
        outcomes["hflip only"] += np.array_equal(out, img[:, ::-1])
        outcomes["untouched"] += np.array_equal(out, img)
    # independent p=0.5 flip / flip / rotate: each outcome has probability 1/8 (50 of 400 expected)
    assert 20 <= outcomes["hflip only"] <= 90, outcomes
    assert 20 <= outcomes["untouched"] <= 90, outcomes
    seed_augmentation(aug, 7)
    first = aug(image=img, mask=mask)["image"]
    seed_augmentation(aug, 7)
    assert np.array_equal(first, aug(image=img, mask=mask)["image"])


def test_loader_workers_start_without_fork_where_forkserver_exists(tiny_store):
    """Forking a process that runs zarr's I/O threads can deadlock (Python 3.12+ warns): workers come from
    forkserver, so the dataset, the store and the worker init travel pickled."""
    import multiprocessing
    import pickle
    import warnings

    store = LiverStore.open(tiny_store)
    cfg = cfg_for(tiny_store)
    rows, val_rows = ds.split_rows(store, 0)
    data = ds.SliceDataset(store, rows, cfg)
    data[0]  # the store has been read: zarr's threads run in this process now
    val = ds.ValidationDataset(store, val_rows, cfg)
    pickle.loads(pickle.dumps((data, val)))
    plan = loaders.LoaderPlan(1, "file_system", False)
    from liverctl.workers import start_method

    if "forkserver" in multiprocessing.get_all_start_methods():
        assert start_method() == "forkserver"
    sampler = ds.EpochSampler(data.liver, 3.0, seed=0, num_samples=4)
    loader = loaders.make_train_loader(data, sampler, 2, plan)
    assert loader.multiprocessing_context.get_start_method() == start_method()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # "multi-threaded, use of fork() may lead to deadlocks"
        batches = list(loader)
        val_batches = list(loaders.make_val_loader(val, 2, plan))
    assert len(batches) == 2 and data.finish(batches[0], "cpu")[0].shape == (2, 3, 64, 64)
    assert sum(len(b[0]) for b in val_batches) == len(val_rows)


def test_read_path_without_augmentation_skips_albumentations_and_matches_it(tiny_store):
    store = LiverStore.open(tiny_store)
    cfg = cfg_for(tiny_store, "data.augment='none'")
    rows, _ = ds.split_rows(store, 0)
    data = ds.SliceDataset(store, rows, cfg, augment_on="cpu")
    assert data.read_only and tuple(data.shapes[int(data.case_codes[3])]) == (64, 64)  # the shortcut applies
    items = [(3, 1), (9, 2), (int(np.flatnonzero(data.liver)[0]), 3)]
    fast = data.batch(items)
    data.read_only = False  # through albumentations (a Resize to the same size)
    slow = data.batch(items)
    assert torch.equal(fast["image"], slow["image"]) and torch.equal(fast["mask"], slow["mask"])
    assert int(fast["mask"].sum()) > 0


def test_validation_items_are_uint8_masks_and_the_images_predict_feeds_the_model(tiny_store):
    from liverctl.infer.predict import read_case_volume, stack_at

    store = LiverStore.open(tiny_store)
    cfg = cfg_for(tiny_store, "data.augment='none'")
    _, val_rows = ds.split_rows(store, 0)
    val = ds.ValidationDataset(store, val_rows, cfg)
    image, mask, label, code, z = val[2]
    assert image.dtype == torch.float32 and mask.dtype == torch.uint8 and label.dtype == torch.uint8
    case = val.case_ids[code]
    stats = store.meta(case).get("stats", {})
    as_predict = ds.resize_stack(ds.normalize(stack_at(read_case_volume(store, case), z, 1), cfg, stats), 64)
    assert np.array_equal(image.numpy(), as_predict)  # bit for bit: validation Dice == evaluate's Dice
    train_side = ds.SliceDataset(store, val_rows, cfg, augment_on="cpu").batch([(2, 0)])
    assert torch.equal(mask, train_side["mask"][0])
    assert torch.equal(label, torch.from_numpy(store.read_label_slice(case, z)))


def test_worker_batch_slots_are_reused_only_after_finish(tiny_store):
    """Workers write into reused shared-memory slots: a batch kept unfinished is never overwritten."""
    from collections import Counter

    # float16 as for a GPU: `finish` copies and frees at once (in place on the CPU: the test above)
    data, _, loader = worker_loader(tiny_store, step_on="cuda", samples=24, batch=2, workers=1)
    held, slots, pointers = [], Counter(), {}
    for i, batch in enumerate(loader):
        slot = tuple(batch["slot"].tolist())
        slots[slot] += 1
        if slot[1] >= 0:  # a slot's batches arrive in the same mapping: it stays mapped in this process
            assert pointers.setdefault(slot, batch["image"].data_ptr()) == batch["image"].data_ptr(), slot
        if i < 3:
            held.append((batch, batch["image"].clone(), batch["mask"].clone()))  # kept, never finished
        else:
            data.finish(batch, "cpu")
    for batch, image, mask in held:
        assert torch.equal(batch["image"], image) and torch.equal(batch["mask"], mask)
    assert sum(slots.values()) == 12
    assert max(n for slot, n in slots.items() if slot[1] >= 0) >= 2, slots  # a released slot came back
    assert data.slots.free[0, :3].tolist() == [0, 0, 0]  # the held batches' slots are still taken
    stranger = dict(held[0][0], slot=torch.tensor([data.slots.token + 1, 0, 0], dtype=torch.int32))
    data.finish(stranger, "cpu")  # another loader's batch frees nothing here
    assert data.slots.free[0, :3].tolist() == [0, 0, 0]
    for batch, _, _ in held:
        data.finish(batch, "cpu")
    assert data.slots.free[0, :3].tolist() == [1, 1, 1]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_loader_worker_finishes_its_batch_after_a_signal_to_its_process_group(sig):
    """Ctrl-C and `timeout` / `kill -- -PGID` signal every process of the group: a worker must keep
    serving batches until the trainer, which saves a checkpoint on the signal, shuts it down."""
    import subprocess
    import sys

    code = ("import os, signal, time; from liverctl.data import loaders; loaders.WORKER_SIGTERM_GRACE_S = 1; "
            f"loaders._worker_init(0); os.kill(os.getpid(), signal.{sig}); time.sleep(0.3); "
            "print('alive', flush=True); time.sleep(2); print('still alive', flush=True)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if sig == "SIGINT":  # left to the trainer, which shuts its workers down
        assert (done.returncode, done.stdout.split("\n")[:2]) == (0, ["alive", "still alive"]), done.stderr[-2000:]
    else:  # the batch in flight can still be finished, but the worker does end (terminate() must work)
        assert (done.returncode, done.stdout.strip()) == (-signal.SIGALRM, "alive"), done.stderr[-2000:]


@pytest.mark.parametrize("stats", ["\ud800", {}, {"min": "x", "max": 1.0}, {"min": None, "max": 1.0},
                                   {"min": 0.0, "max": float("inf")}, [1, 2]])
def test_minmax_over_stats_that_are_not_two_numbers_is_one_line(stats):
    """The store's stats of a case are anyone's zarr.json: a text there ended a minmax training's dataset in
    TypeError (string indices must be integers; scripts/fuzz_readers.py json), none in KeyError, and infinity
    normalised every voxel to 0 or NaN without a word."""
    from liverctl.errors import LiverctlError

    cfg = resolve_config("demo", ["data.normalize='minmax'"])
    with pytest.raises(LiverctlError, match="data.normalize minmax takes a volume's min and max from the store"):
        ds.norm_range(cfg, stats)
    assert ds.norm_range(cfg, {"min": -1000, "max": 2000.5}) == (-1000.0, 2000.5)


def test_a_store_of_one_fold_says_how_to_deal_its_cases_into_more(tiny_dataset, tmp_path, monkeypatch):
    """`ingest --folds 1` puts every training case in fold 0, leaving none to train on beside it: the line said
    "folds in the store: [0]" (a Python list, nothing to do). Ingest now refuses --folds 1; a store an older
    ingest wrote with one fold is made here by letting the count through."""
    from liverctl.data import ingest
    from liverctl.data.ingest import ingest_folder
    from liverctl.errors import LiverctlError

    monkeypatch.setattr(ingest, "check_fold_options", lambda n_folds, fold_seed: None)
    ingest_folder(tiny_dataset, tmp_path / "one.zarr", n_folds=1, workers=1)
    store = LiverStore.open(tmp_path / "one.zarr")
    with pytest.raises(LiverctlError, match=r"^no training cases outside fold 0: every training case of the store is "
                                            r"in it; deal them into more folds: liverctl ingest DATA --store "
                                            r"\S*one.zarr --folds 5$"):
        ds.split_rows(store, 0)
