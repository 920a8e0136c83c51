"""The cpu path of augmentation: albumentations in the DataLoader workers (`data.augment_on` = cpu, or
auto without CUDA). The device path is `liverctl.data.augment_device`, with the same transforms, order and
parameters; both keep image and mask aligned (tests/data/test_augment_device.py).
"""

from __future__ import annotations

import numpy as np


def build_augmentation(cfg: dict, train: bool):
    """The albumentations pipeline of `data.augment` (images HWC float32, masks HW uint8)."""
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
    return A.Compose(steps)


def seed_augmentation(compose, seed: int) -> None:
    """Seed an albumentations pipeline so that each of its transforms draws independently.

    albumentations 2 seeds every transform of a Compose with the same seed, so their first draws
    coincide: flip, flip and rotate (all p=0.5) then fire all together or not at all, and training never
    sees a horizontal flip alone (which made hflip TTA lose 0.15 volume Dice on the demo). Each
    transform gets its own seed derived from `seed`; the result stays a pure function of `seed`.
    """
    compose.set_random_seed(seed)
    own = np.random.SeedSequence(seed).generate_state(len(compose.transforms))
    for transform, transform_seed in zip(compose.transforms, own, strict=True):
        transform.set_random_seed(int(transform_seed))


def normalise_float16(stack16: np.ndarray, norm: tuple[float, float]):
    """HU float16 (C, X, Y) -> clip((x - lo) / (hi - lo), 0, 1) as a float32 torch tensor (C, X, Y)
    (zeros when hi <= lo): the cpu path's normalisation, the same arithmetic as `normalize`."""
    import torch

    lo, hi = norm
    x = torch.from_numpy(stack16).float()  # contiguous: several times faster than numpy's float16 cast
    if not hi > lo:
        return x.zero_()
    return x.sub_(lo).mul_(1.0 / (hi - lo)).clamp_(0.0, 1.0)


def normalise_into(out, stack16: np.ndarray, norm: tuple[float, float]) -> None:
    """`normalise_float16` written into `out` (a float16 or float32 tensor (C, X, Y)): into float32 in
    place, without the temporary; into float16 through it (torch has no float16 arithmetic this fast)."""
    import torch

    if out.dtype != torch.float32:
        out.copy_(normalise_float16(stack16, norm))  # the cast to float16 is part of this copy
        return
    lo, hi = norm
    out.copy_(torch.from_numpy(stack16))
    if not hi > lo:
        out.zero_()
    else:
        out.sub_(lo).mul_(1.0 / (hi - lo)).clamp_(0.0, 1.0)


def augment_sample(stack16: np.ndarray, label: np.ndarray, norm: tuple[float, float], augment, seed: int):
    """The cpu path of one sample: HU float16 (C, X, Y) + label uint8 (X, Y) -> normalised, augmented,
    resized image float32 (C, S, S) (a view of albumentations' HWC output) and mask uint8 (S, S), as
    torch tensors.

    Normalisation runs here because albumentations' rotation and resize need float32 (cv2 has no float16
    warp): a contiguous float16 -> float32 cast and normalisation (`normalise_float16`), then `cv2.merge`
    into the HWC layout albumentations wants (a third faster than one strided torch copy); the way back
    to float16 CHW is one torch copy (numpy's float16 conversions are several times slower).
    """
    import cv2
    import torch

    chw = normalise_float16(stack16, norm).numpy()
    hwc = cv2.merge(list(chw)) if len(chw) > 1 else chw[0][:, :, None]
    seed_augmentation(augment, int(seed))
    out = augment(image=hwc, mask=label)
    image = np.ascontiguousarray(out["image"]).reshape(*out["image"].shape[:2], -1)
    return torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(np.ascontiguousarray(out["mask"]))
