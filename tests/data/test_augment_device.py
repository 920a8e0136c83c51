"""Batched device augmentation (run here on CPU tensors): alignment, seeds, presets, the cpu path beside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from liverctl.config import resolve_config
from liverctl.data import augment_cpu
from liverctl.data import augment_device as ad
from liverctl.data import dataset as ds

torch.set_num_threads(1)


def cfg_with(augment: str, size: int = 64):
    return resolve_config("demo", [f"data.input_size={size}", f"data.augment='{augment}'", "data.rotate_limit=30"])


def blob_mask(size: int, seed: int) -> np.ndarray:
    """An off-centre, asymmetric blob (uint8 (size, size)), so that a flip or rotation shows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cx, cy = rng.uniform(0.25, 0.45) * size, rng.uniform(0.55, 0.75) * size
    mask = ((xx - cx) / (0.22 * size)) ** 2 + ((yy - cy) / (0.12 * size)) ** 2 < 1
    mask[int(0.1 * size) : int(0.2 * size), int(0.6 * size) : int(0.9 * size)] = True  # a bar elsewhere
    return mask.astype(np.uint8)


def image_from(mask: np.ndarray, window=(-100.0, 200.0)) -> np.ndarray:
    """HU drawn from the mask: window top inside, window bottom outside; 3 channels. float16 (3, X, Y)."""
    hu = np.where(mask > 0, window[1], window[0]).astype(np.float16)
    return np.stack([hu, hu, hu])


def agreement(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of pixels where the centre channel thresholded at 0.5 equals the mask."""
    return float(((image[1] > 0.5) == (mask[0] > 0.5)).float().mean())


def device_batch(masks: list[np.ndarray], seeds: list[int]) -> dict:
    images = torch.from_numpy(np.stack([image_from(m) for m in masks]))
    return {
        "image": images,
        "mask": torch.from_numpy(np.stack(masks)[:, None]),
        "norm": torch.tensor([[-100.0, 200.0]] * len(masks)),
        "size": torch.tensor([m.shape for m in masks], dtype=torch.int32),
        "seed": torch.tensor(seeds),
    }


@pytest.mark.parametrize("augment", ["flip_rotate", "distort"])
def test_device_path_keeps_image_and_mask_aligned(augment):
    cfg = cfg_with(augment)
    masks = [blob_mask(64, s) for s in range(8)]
    image, mask = ad.finish_batch(device_batch(masks, list(range(100, 108))), cfg, "cpu", augment=True)
    assert image.shape == (8, 3, 64, 64) and mask.shape == (8, 1, 64, 64) and image.dtype == torch.float32
    changed = 0
    for i in range(8):
        assert agreement(image[i], mask[i]) > 0.98, i
        changed += not torch.equal(mask[i, 0], torch.from_numpy(masks[i]).float())
    assert changed >= 4  # most samples were actually moved


@pytest.mark.parametrize("augment", ["flip_rotate", "distort"])
def test_cpu_path_keeps_image_and_mask_aligned(augment):
    cfg = cfg_with(augment)
    aug = augment_cpu.build_augmentation(cfg, train=True)
    changed = 0
    for seed in range(8):
        mask = blob_mask(64, seed)
        image, out_mask = augment_cpu.augment_sample(image_from(mask), mask, (-100.0, 200.0), aug, 100 + seed)
        assert image.shape == (3, 64, 64) and out_mask.shape == (64, 64)
        assert agreement(image, out_mask[None].float()) > 0.98, seed
        changed += not np.array_equal(out_mask.numpy(), mask)
    assert changed >= 4


@pytest.mark.parametrize("augment", ["flip_rotate", "distort"])
def test_cpu_path_planes_get_what_albumentations_does_to_the_whole_stack(augment):
    """Each channel is its own albumentations target (faster than one (X, Y, C) image): the same draws for
    every channel, so the result is the multi-channel image's, up to float32 rounding in the warps."""
    import albumentations as A

    cfg = cfg_with(augment)
    aug = augment_cpu.albumentations_pipeline(cfg, train=True)
    whole = A.Compose(list(aug.transforms))  # the same transforms, the stack as one image
    rng = np.random.default_rng(0)
    differed = 0
    for seed in range(12):
        mask = blob_mask(64, seed)
        stack = (rng.normal(50, 80, size=(3, 64, 64)) + 150 * mask).astype(np.float16)  # three different planes
        image, out_mask = augment_cpu.augment_sample(stack, mask, (-100.0, 200.0), aug, seed)
        hwc = np.ascontiguousarray(augment_cpu.normalise_float16(stack, (-100.0, 200.0)).numpy().transpose(1, 2, 0))
        augment_cpu.seed_augmentation(whole, seed)
        expected = whole(image=hwc, mask=mask)
        np.testing.assert_allclose(image.numpy(), expected["image"].transpose(2, 0, 1), atol=1e-5, rtol=0)
        assert np.array_equal(out_mask.numpy(), expected["mask"])
        differed += not np.array_equal(image.numpy(), augment_cpu.normalise_float16(stack, (-100.0, 200.0)).numpy())
    assert differed >= 6  # the transforms did fire


@pytest.mark.parametrize("augment", ["flip_rotate", "distort"])
@pytest.mark.parametrize("size", [64, 96])
def test_cpu_path_into_the_batch_gives_what_it_returns(augment, size):
    """A worker writes its sample into the batch (`out`): the batch must hold exactly what `out=None`
    returns, whichever transforms fired (none, some, all), rounded where the batch is float16, at the
    stack's own size and through Resize."""
    cfg = cfg_with(augment, size)
    aug = augment_cpu.build_augmentation(cfg, train=True)
    rng = np.random.default_rng(1)
    untouched = moved = 0
    for seed in range(16):
        mask = blob_mask(64, seed)
        stack = (rng.normal(50, 80, size=(3, 64, 64)) + 150 * mask).astype(np.float16)
        image, out_mask = augment_cpu.augment_sample(stack, mask, (-100.0, 200.0), aug, seed)
        for dtype, mask_dtype in ((torch.float32, torch.float32), (torch.float16, torch.uint8)):  # as handed over
            batch = (
                torch.full((3, size, size), float("nan"), dtype=dtype),
                torch.full((size, size), 7, dtype=mask_dtype),
            )
            augment_cpu.augment_sample(stack, mask, (-100.0, 200.0), aug, seed, out=batch)
            assert torch.equal(batch[0], image.to(dtype)), (seed, dtype)
            assert torch.equal(batch[1], out_mask.to(mask_dtype)), (seed, dtype)
        same = size == 64 and torch.equal(image, augment_cpu.normalise_float16(stack, (-100.0, 200.0)))
        untouched += same
        moved += not same
    assert moved >= 8 and (size != 64 or untouched >= 1)  # both cases occurred where they can


def albumentations_with(params: dict, size: int):
    """albumentations' Resize, HorizontalFlip, VerticalFlip and Rotate with `params`' draws forced, a
    stack's three channels as three targets."""
    import albumentations as A
    import cv2

    steps = [A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST_EXACT)]
    if params["hflip"]:
        steps.append(A.HorizontalFlip(p=1))
    if params["vflip"]:
        steps.append(A.VerticalFlip(p=1))
    if params["angle"]:
        angle = params["angle"]
        steps.append(A.Rotate(limit=(angle, angle), border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1))
    return A.Compose(steps, additional_targets={"image1": "image", "image2": "image"})


@pytest.mark.parametrize(("stack_size", "size"), [(64, 64), (64, 96), (96, 64)])
def test_flip_rotate_is_albumentations_geometry_with_the_device_paths_draws(stack_size, size):
    """The cpu path of flip_rotate (`FlipRotate`: one warp a plane into the batch) gives what albumentations'
    Resize, flips and Rotate give for the same draws, and those draws are the device path's, so a seed gives
    the same sample on both paths, also where the slice is resized (the device path once sampled a grown
    slice through one composed grid: its outer pixels blended with the zeros beyond the edge, 0.29 off)."""
    cfg = cfg_with("flip_rotate", size)
    aug = augment_cpu.build_augmentation(cfg, train=True)
    assert isinstance(aug, augment_cpu.FlipRotate)
    rng = np.random.default_rng(2)
    fired = {"hflip": 0, "vflip": 0, "angle": 0, "none": 0}
    for seed in range(24):
        mask = blob_mask(stack_size, seed)
        stack = (rng.normal(50, 80, size=(3, stack_size, stack_size)) + 150 * mask).astype(np.float16)
        image, out_mask = augment_cpu.augment_sample(stack, mask, (-100.0, 200.0), aug, seed)
        params = ad.sample_params(seed, cfg)
        assert aug.params(seed) == params
        for key in ("hflip", "vflip", "angle"):
            fired[key] += bool(params[key])
        fired["none"] += not (params["hflip"] or params["vflip"] or params["angle"])
        planes = augment_cpu.normalise_float16(stack, (-100.0, 200.0)).numpy()
        expected = albumentations_with(params, size)(
            image=planes[0], image1=planes[1], image2=planes[2], mask=mask)
        want = np.stack([expected["image"], expected["image1"], expected["image2"]])
        np.testing.assert_allclose(image.numpy(), want, atol=1e-5, rtol=0, err_msg=str((seed, params)))
        assert np.array_equal(out_mask.numpy(), expected["mask"]), (seed, params)
        batch = device_batch([mask], [seed])  # the device path, same seed: the same sample, grown or shrunk too
        batch["image"] = torch.from_numpy(stack[None])
        on_device = ad.finish_batch(batch, cfg, "cpu", augment=True)
        assert torch.allclose(on_device[0][0], image, atol=1e-4), (seed, params)
        assert (on_device[1][0, 0] != out_mask.float()).float().mean() < 0.002, (seed, params)
    assert min(fired.values()) >= 3, fired  # every branch (flips only, rotation, nothing) was taken


@pytest.mark.parametrize(("stack_size", "size"), [(64, 96), (96, 64), (64, 64)])
def test_a_resized_slice_keeps_its_edge_and_only_what_rotation_uncovers_is_air_on_both_paths(stack_size, size):
    """A slice bright to its edge: resizing clamps at the slice's border (cv2 replicates it), so no pixel of a
    grown slice darkens; only what a rotation uncovers gets the fill, 0, which is what air normalises to (the
    window's bottom and below), on both paths. In a batch of mixed sizes the grown slice reads none of the
    padding either."""
    cfg = cfg_with("flip_rotate", size)
    norm = (-100.0, 200.0)
    air = float(ds.normalize(np.full((1, 1, 1), -1000.0), cfg, {})[0, 0, 0])
    assert air == 0.0
    bright = np.full((3, stack_size, stack_size), 150.0, np.float16)  # 250 / 300 of the window
    level = (150.0 - norm[0]) / (norm[1] - norm[0])
    label = np.ones((stack_size, stack_size), np.uint8)
    aug = augment_cpu.build_augmentation(cfg, train=True)
    still = next(s for s in range(100) if not ad.sample_params(s, cfg)["angle"])
    turned = next(s for s in range(100) if abs(ad.sample_params(s, cfg)["angle"]) > 10)
    padded = np.zeros((3, stack_size + 8, stack_size + 8), np.float16)  # the batch's other slice is larger
    padded[:, :stack_size, :stack_size] = bright
    for seed in (still, turned):
        cpu_image, cpu_mask = augment_cpu.augment_sample(bright, label, norm, aug, seed)
        batch = device_batch([np.pad(label, ((0, 8), (0, 8))), np.ones((stack_size + 8,) * 2, np.uint8)], [seed, 0])
        batch["image"] = torch.from_numpy(np.stack([padded, padded]))
        batch["size"] = torch.tensor([[stack_size, stack_size], [stack_size + 8, stack_size + 8]], dtype=torch.int32)
        device_image, device_mask = ad.finish_batch(batch, cfg, "cpu", augment=True)
        for image, mask in ((cpu_image, cpu_mask[None].float()), (device_image[0], device_mask[0])):
            if seed == still:
                assert torch.allclose(image, torch.full_like(image, level), atol=1e-5), (seed, float(image.min()))
                assert bool(torch.all(mask == 1)), seed
            else:
                corners = image[:, [0, 0, -1, -1], [0, -1, 0, -1]]
                assert bool(torch.all(corners == air)) and abs(float(image[:, size // 2, size // 2].mean()) - level) < 1e-5
                assert bool(torch.all(mask[:, [0, 0, -1, -1], [0, -1, 0, -1]] == 0))
        assert torch.allclose(device_image[0], cpu_image, atol=1e-4), seed
        assert (device_mask[0, 0] != cpu_mask.float()).float().mean() < 0.002, seed


def centroid(plane: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(plane)
    return np.array([rows.mean(), cols.mean()])


@pytest.mark.parametrize("augment", ["none", "flip_rotate"])
@pytest.mark.parametrize(("shape", "size"), [((40, 24), 32), ((24, 40), 64), ((160, 96), 32), ((20, 20), 64)])
def test_a_resized_mask_stays_on_its_image_on_both_paths(augment, shape, size):
    """A slice of another size than the model's (non-square, shrunk or grown): the cpu path's mask lies on its
    bilinear image as the device path's does, and both paths give the same mask. cv2's INTER_NEAREST (floor(i *
    scale)) put the mask (scale - 1) / 2 source pixels off the image: 1 pixel at 160 x 96 -> 32."""
    cfg = cfg_with(augment, size)
    aug = augment_cpu.build_augmentation(cfg, train=augment != "none")
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = ((((yy - 0.45 * shape[0]) / (0.3 * shape[0])) ** 2 + ((xx - 0.6 * shape[1]) / (0.25 * shape[1])) ** 2) < 1)
    mask = mask.astype(np.uint8)
    stack = image_from(mask)
    seeds = [s for s in range(40) if not ad.sample_params(s, cfg)["angle"]][:6]  # resize and flips: exact geometry
    for seed in seeds:
        image, out_mask = augment_cpu.augment_sample(stack, mask, (-100.0, 200.0), aug, seed)
        on_image = image[1].numpy() > 0.5
        assert np.abs(centroid(out_mask.numpy()) - centroid(on_image)).max() < 0.1, seed
        on_device = ad.finish_batch(device_batch([mask], [seed]), cfg, "cpu", augment=augment != "none")[1][0, 0]
        assert np.array_equal(on_device.numpy(), out_mask.numpy()), seed  # ties too: cv2's own index


def test_flip_rotate_outside_training_only_resizes():
    cfg = cfg_with("flip_rotate", 96)
    aug = augment_cpu.build_augmentation(cfg, train=False)
    mask = blob_mask(64, 1)
    stack = image_from(mask)
    for seed in range(6):
        image, out_mask = augment_cpu.augment_sample(stack, mask, (-100.0, 200.0), aug, seed)
        expected = albumentations_with(ad.identity_params(), 96)(
            image=augment_cpu.normalise_float16(stack, (-100.0, 200.0)).numpy()[1], mask=mask)
        np.testing.assert_allclose(image[1].numpy(), expected["image"], atol=1e-6, rtol=0)
        assert np.array_equal(out_mask.numpy(), expected["mask"])


def test_device_augmentation_is_a_function_of_the_seed_and_the_draws_vary():
    cfg = cfg_with("distort")
    masks = [blob_mask(64, 0)] * 4
    a = ad.finish_batch(device_batch(masks, [1, 2, 3, 4]), cfg, "cpu", augment=True)
    b = ad.finish_batch(device_batch(masks, [1, 2, 3, 4]), cfg, "cpu", augment=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = ad.finish_batch(device_batch(masks[:1], [3]), cfg, "cpu", augment=True)  # position in the batch: no matter
    assert torch.allclose(a[0][2], c[0][0], atol=1e-6)
    draws = [ad.sample_params(s, cfg) for s in range(400)]
    hflips = sum(p["hflip"] for p in draws)
    rotations = sum(p["angle"] != 0.0 for p in draws)
    grids = sum(p["grid"] is not None for p in draws)
    elastic = sum(p["elastic"] is not None for p in draws)
    assert 160 <= hflips <= 240 and 160 <= rotations <= 240  # p = 0.5
    assert 80 <= grids <= 160 and 80 <= elastic <= 160  # p = 0.3
    assert all(abs(p["angle"]) <= 30 for p in draws)
    assert sum(p["hflip"] and not p["vflip"] and p["angle"] == 0 for p in draws) > 20  # independent draws
    none = ad.sample_params(5, cfg_with("none"))
    assert not none["hflip"] and none["angle"] == 0.0 and none["grid"] is None


def test_each_transform_moves_pixels_where_albumentations_does():
    """A horizontal flip alone mirrors the last axis, a vertical one the axis before, on both paths."""
    cfg = cfg_with("flip_rotate")
    mask = blob_mask(64, 3)
    for flag, dims in (("hflip", (-1,)), ("vflip", (-2,))):
        seed = next(s for s in range(1000) if (p := ad.sample_params(s, cfg))[flag]
                    and not p["hflip" if flag == "vflip" else "vflip"] and p["angle"] == 0)
        _, out = ad.finish_batch(device_batch([mask], [seed]), cfg, "cpu", augment=True)
        assert torch.equal(out[0, 0], torch.from_numpy(mask).float().flip(dims))


def test_mixed_sizes_are_resized_into_one_batch_and_padding_never_shows():
    cfg = cfg_with("none", size=32)
    masks = [blob_mask(64, 0), np.ones((48, 40), np.uint8)]
    padded = np.zeros((2, 64, 64), np.uint8)
    padded[0], padded[1, :48, :40] = masks[0], masks[1]
    batch = device_batch([padded[0], padded[1]], [0, 0])
    batch["size"] = torch.tensor([[64, 64], [48, 40]], dtype=torch.int32)
    image, mask = ad.finish_batch(batch, cfg, "cpu", augment=False)
    assert image.shape == (2, 3, 32, 32)
    assert torch.all(mask[1] == 1)  # all of the 48 x 40 sample, none of the padding
    assert agreement(image[0], mask[0]) > 0.95


def test_normalisation_on_the_device_matches_the_cpu_one():
    cfg = resolve_config("v1")
    hu = np.linspace(-1200, 1500, 3 * 4 * 5, dtype=np.float16).reshape(3, 4, 5)
    stats = {"min": -1000.0, "max": 1000.0}
    got = ad.normalise_on_device(torch.from_numpy(hu)[None], torch.tensor([ds.norm_range(cfg, stats)]))[0]
    assert np.allclose(got.numpy(), ds.normalize(hu, cfg, stats), atol=1e-6)
    flat = ad.normalise_on_device(torch.from_numpy(hu)[None], torch.tensor([[5.0, 5.0]]))
    assert float(flat.abs().max()) == 0.0  # a constant volume under minmax: zeros, as on the cpu


@pytest.mark.parametrize("float16_arithmetic", [True, False])
def test_cpu_normalisation_matches_the_reference_with_and_without_float16_opencv(monkeypatch, float16_arithmetic):
    """The cpu path's `normalise_float16` / `normalise_into` equal `normalize` (numpy, what predict uses)
    to within a float32 rounding, whether OpenCV reads the float16 planes itself (5.x) or torch casts
    first (4.x), into float32 and float16 batches, clipped at both ends; a flat window gives zeros."""
    if float16_arithmetic and not augment_cpu.opencv_float16_arithmetic():
        pytest.skip("this OpenCV has no float16 arithmetic")
    monkeypatch.setattr(augment_cpu, "opencv_float16_arithmetic", lambda: float16_arithmetic)
    cfg = resolve_config("v1")
    stats = {"min": -1000.0, "max": 1000.0}
    rng = np.random.default_rng(0)
    hu = (rng.uniform(-1200, 1500, size=(3, 48, 40))).astype(np.float16)
    want = ds.normalize(hu, cfg, stats)
    assert want.min() == 0.0 and want.max() == 1.0  # the data reach past both ends of the range
    got = augment_cpu.normalise_float16(hu, ds.norm_range(cfg, stats))
    assert got.dtype == torch.float32 and np.allclose(got.numpy(), want, atol=2e-7, rtol=0)
    batch = torch.full((2, 3, 48, 40), 7.0)  # into a batch's sample, as a worker writes it
    augment_cpu.normalise_into(batch[1], hu, ds.norm_range(cfg, stats))
    assert np.allclose(batch[1].numpy(), want, atol=2e-7, rtol=0) and float(batch[0].min()) == 7.0
    half = torch.empty((3, 48, 40), dtype=torch.float16)
    augment_cpu.normalise_into(half, hu, ds.norm_range(cfg, stats))
    assert np.allclose(half.float().numpy(), want, atol=5e-4, rtol=0)
    assert float(augment_cpu.normalise_float16(hu, (5.0, 5.0)).abs().max()) == 0.0


def test_augment_on_auto_picks_the_device_on_cuda_and_the_key_forces_either():
    cfg = resolve_config("v5")
    assert ad.resolve_augment_on(cfg, torch.device("cpu")) == "cpu"
    assert ad.resolve_augment_on(cfg, torch.device("cuda", 0)) == "device"
    forced = resolve_config("v5", ["data.augment_on='device'"])
    assert ad.resolve_augment_on(forced, torch.device("cpu")) == "device"
    assert ad.resolve_augment_on(resolve_config("v5", ["data.augment_on='cpu'"]), "cuda") == "cpu"
    from liverctl.errors import LiverctlError

    with pytest.raises(LiverctlError, match="augment_on"):
        resolve_config("v5", ["data.augment_on='gpu'"])


@pytest.mark.parametrize("shape", [(96, 80), (40, 24), (24, 40)])
def test_validation_and_prediction_resize_as_training_does(shape):
    """`resize_stack` (validation, predict) shrank with area interpolation where training resizes bilinear:
    the model was scored and used on inputs it was not trained on. Shrinking and growing both agree now."""
    for size in (32, 64):
        cfg = cfg_with("none", size)
        stack = np.random.default_rng(0).uniform(-300, 400, (3, *shape)).astype(np.float16)
        image, _ = augment_cpu.augment_sample(stack, np.zeros(shape, np.uint8), (-100.0, 200.0),
                                              augment_cpu.build_augmentation(cfg, train=True), seed=0)
        expected = ds.resize_stack(ds.normalize(stack, cfg, {}), size)
        np.testing.assert_allclose(image.numpy(), expected, atol=1e-5, rtol=0)
