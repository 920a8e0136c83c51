"""The cpu path of augmentation: albumentations in the DataLoader workers (`data.augment_on` = cpu, or
auto without CUDA). The device path is `liverctl.data.augment_device`, with the same transforms, order and
parameters; both keep image and mask aligned (tests/data/test_augment_device.py).
"""

from __future__ import annotations

import functools
import random

import numpy as np

from liverctl.config import in_channels


def build_augmentation(cfg: dict, train: bool):
    """The albumentations pipeline of `data.augment`: each channel of a stack a float32 (X, Y) plane, the
    mask uint8 (X, Y) (`augment_sample`)."""
    import albumentations as A
    import cv2

    data = cfg["data"]
    size = int(data["input_size"])
    steps = [A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)]
    if train and data["augment"] in ("flip_rotate", "distort"):
        steps += [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.Rotate(limit=data["rotate_limit"], border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
        ]
    if train and data["augment"] == "distort":
        steps += [
            A.GridDistortion(p=0.3, border_mode=cv2.BORDER_CONSTANT),
            A.ElasticTransform(p=0.3, border_mode=cv2.BORDER_CONSTANT),
        ]
    # each channel of a 2.5D stack is its own image target, drawn with the same parameters (`augment_sample`)
    planes = {plane_key(c): "image" for c in range(1, in_channels(cfg))}
    return A.Compose(steps, additional_targets=planes)


def plane_key(channel: int) -> str:
    """The albumentations target of a stack's channel: "image", "image1", "image2", ..."""
    return "image" if channel == 0 else f"image{channel}"


def seed_augmentation(compose, seed: int) -> None:
    """Seed an albumentations pipeline so that each of its transforms draws independently.

    albumentations 2 seeds every transform of a Compose with the same seed (`set_random_seed`), so their
    first draws coincide: flip, flip and rotate (all p=0.5) then fire all together or not at all, and
    training never sees a horizontal flip alone (which made hflip TTA lose 0.15 volume Dice on the demo).
    Here the Compose and all its transforms share one pair of generators seeded from `seed`
    (`set_random_state`), so each transform's draws follow the previous one's in the same stream: independent,
    and a pure function of `seed`. Two generators a sample instead of two per transform (and per Compose)
    as `set_random_seed` makes: ~0.1 ms less CPU a v5 sample.
    """
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))


def normalise_float16(stack16: np.ndarray, norm: tuple[float, float]):
    """HU float16 (C, X, Y) -> clip((x - lo) / (hi - lo), 0, 1) as a float32 torch tensor (C, X, Y)
    (zeros when hi <= lo): the cpu path's normalisation, the same arithmetic as `normalize`."""
    import torch

    out = torch.empty(stack16.shape, dtype=torch.float32)
    normalise_into(out, stack16, norm)
    return out


def normalise_into(out, stack16: np.ndarray, norm: tuple[float, float]) -> None:
    """`normalise_float16` written into `out` (a float16 or float32 tensor (C, X, Y)): into float32 in
    place, without a temporary; into float16 through a float32 one (torch's float16 arithmetic is slow).

    Two passes over the float32 planes, not four: x * s + b in one cv2 `addWeighted` (straight from the
    float16 planes where this OpenCV does float16 arithmetic (5.x), else in place after torch's
    contiguous cast, which is several times faster than numpy's), then the clamp. Per v5 sample (3 x
    512 x 512, one thread) 0.29 ms (OpenCV 5) or 0.40 ms (4.x) against 0.55 ms for torch's
    cast, sub, mul and clamp; the result is `(x - lo) / (hi - lo)` to within a float32 rounding.
    """
    import torch

    if out.dtype != torch.float32 or not out.is_contiguous():
        out.copy_(normalise_float16(stack16, norm))  # the cast to float16 is part of this copy
        return
    lo, hi = norm
    if not hi > lo:
        out.zero_()
        return
    import cv2

    scale = 1.0 / (hi - lo)
    planes = out.numpy()
    if stack16.dtype == np.float16 and stack16.ndim == 3 and stack16.flags.c_contiguous \
            and opencv_float16_arithmetic():
        for plane16, plane in zip(stack16, planes, strict=True):
            cv2.addWeighted(plane16, scale, plane16, 0.0, -lo * scale, dst=plane, dtype=cv2.CV_32F)
    else:
        out.copy_(torch.from_numpy(stack16))
        rows = planes.reshape(-1, planes.shape[-1])  # one call for all planes
        cv2.addWeighted(rows, scale, rows, 0.0, -lo * scale, dst=rows)
    out.clamp_(0.0, 1.0)


@functools.cache
def opencv_float16_arithmetic() -> bool:
    """Whether this OpenCV's arithmetic takes float16 arrays (5.x does; 4.x raises)."""
    import cv2

    probe = np.ones((1, 8), dtype=np.float16)
    try:
        cv2.addWeighted(probe, 1.0, probe, 0.0, 0.0, dtype=cv2.CV_32F)
    except (cv2.error, TypeError):
        return False
    return True


def augment_sample(stack16: np.ndarray, label: np.ndarray, norm: tuple[float, float], augment, seed: int,
                   out: tuple | None = None):
    """The cpu path of one sample: HU float16 (C, X, Y) + label uint8 (X, Y) -> normalised, augmented,
    resized image float32 (C, S, S) and mask uint8 (S, S), as torch tensors; written into `out` (the
    batch's image (C, S, S), float16 or float32, and mask (S, S)) when given, and `out` returned.

    Normalisation runs here because albumentations' rotation and resize need float32 (cv2 has no float16
    warp): one contiguous float16 -> float32 cast and normalisation (`normalise_float16`). Each channel goes
    through albumentations as its own (X, Y) plane, one call with the same draws for all (`plane_key`):
    against one (X, Y, C) image this needs no interleaving copy either way, and cv2 warps and flips the
    planes faster (1.13 against 1.75 ms of CPU a v5 sample, 512 x 512 x 3); the results agree to float32
    rounding (tests/data/test_augment_device.py).
    """
    import torch

    chw = normalise_float16(stack16, norm).numpy()
    seed_augmentation(augment, int(seed))
    result = augment(mask=label, **{plane_key(c): chw[c] for c in range(len(chw))})
    planes = [torch.from_numpy(np.ascontiguousarray(result[plane_key(c)])) for c in range(len(chw))]
    mask = torch.from_numpy(np.ascontiguousarray(result["mask"]))
    if out is None:
        return torch.stack(planes), mask
    for c, plane in enumerate(planes):
        out[0][c].copy_(plane)  # a cast to float16, where the batch is handed over as such, is part of this copy
    out[1].copy_(mask)
    return out
