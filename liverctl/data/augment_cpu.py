"""The cpu path of augmentation, in the DataLoader workers (`data.augment_on` = cpu, or auto without CUDA).
The device path is `liverctl.data.augment_device`, with the same transforms, order and parameters; both keep
image and mask aligned (tests/data/test_augment_device.py).

Two implementations of the presets' transforms, picked by `build_augmentation`:

- `FlipRotate` for `data.augment` none and flip_rotate (v1-v3.x, v5, v6): resize -> horizontal flip ->
  vertical flip -> rotation, the geometry of albumentations' Resize, HorizontalFlip, VerticalFlip and
  Rotate, composed into one cv2 call a plane that writes into the worker's batch. The draws are the device
  path's (`liverctl.data.augment_device.sample_params`), so a seed gives the same sample on both paths.
- the albumentations pipeline (`albumentations_pipeline`) for distort (v4), whose grid distortion and
  elastic transform are albumentations' own. It is also the reference `FlipRotate` is tested against.
"""

from __future__ import annotations

import functools
import random

import numpy as np

from liverctl.config import in_channels


def build_augmentation(cfg: dict, train: bool):
    """The cpu path's augmentation of `augment_sample`: `FlipRotate`, or for distort in training the
    albumentations pipeline."""
    if train and cfg["data"]["augment"] == "distort":
        return albumentations_pipeline(cfg, train)
    return FlipRotate(cfg, train)


def albumentations_pipeline(cfg: dict, train: bool):
    """The albumentations pipeline of `data.augment`: each channel of a stack a float32 (X, Y) plane, the
    mask uint8 (X, Y) (`augment_sample`)."""
    import albumentations as A
    import cv2

    data = cfg["data"]
    size = int(data["input_size"])
    # the mask's nearest is INTER_NEAREST_EXACT: cv2's INTER_NEAREST takes source pixel floor(i * scale), not
    # the one under output pixel i's centre, so it shifts the mask off the bilinear image (`FlipRotate`)
    steps = [A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST_EXACT)]
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


class FlipRotate:
    """resize to S -> horizontal flip (p 0.5) -> vertical flip (p 0.5) -> rotation +-rotate_limit (p 0.5)
    about the centre, zeros outside: albumentations' Resize, HorizontalFlip, VerticalFlip and Rotate
    (bilinear for the image, nearest for the mask, centre at (n / 2 - 0.5) as theirs), in one cv2 call a
    plane written straight into the batch. The mask's resize is `INTER_NEAREST_EXACT` (each output pixel takes
    the source pixel under its centre, as the bilinear image and the device path's `grid_sample` do):
    cv2's `INTER_NEAREST` takes floor(i * scale), which puts the mask up to (scale - 1) / 2 source pixels
    off the image (1.5 pixels at 512 -> 128). Without training (or with augment none) only the resize.

    The flips and the rotation are one forward matrix, R V H: one `warpAffine` when the rotation fires, one
    `cv2.flip` when only flips do, the normalisation alone when nothing does. Against the albumentations
    pipeline this drops the separate flip passes, the copies of each transform's result and the copy into
    the batch: 1.7 against 2.8 ms of CPU a v5 sample into a float32 batch, 1.9 against 2.6 ms into a
    float16 one (512 x 512 x 3, one thread, normalisation included).
    For the same draws the result is albumentations' to within 1.2e-7, the mask exactly, and the device
    path's (`grid_sample`, the resize a step of its own as here) to within 5e-5, grown, shrunk or not, the
    mask exactly at 64 -> 96, 96 -> 64 and 512 -> 512 (tests/data/test_augment_device.py). Scratch planes are kept per
    process.
    """

    def __init__(self, cfg: dict, train: bool):
        self.cfg = cfg
        self.size = int(cfg["data"]["input_size"])
        self.train = train and cfg["data"]["augment"] == "flip_rotate"
        self._scratch: dict[tuple, np.ndarray] = {}

    def __getstate__(self):  # a worker starts with no scratch planes of its own
        return {**self.__dict__, "_scratch": {}}

    def params(self, seed: int) -> dict:
        """The sample's draws: `liverctl.data.augment_device.sample_params`, none when not training."""
        from liverctl.data.augment_device import identity_params, sample_params

        return sample_params(seed, self.cfg) if self.train else identity_params()

    def matrix(self, params: dict) -> np.ndarray | None:
        """The forward 2 x 3 matrix of flips then rotation on an S x S plane (x = the last axis), or None
        when it is the identity."""
        import cv2

        from liverctl.data.augment_device import moves

        if not moves(params):
            return None
        s = self.size
        flips = np.diag([-1.0 if params["hflip"] else 1.0, -1.0 if params["vflip"] else 1.0, 1.0])
        flips[0, 2] = s - 1 if params["hflip"] else 0.0
        flips[1, 2] = s - 1 if params["vflip"] else 0.0
        centre = (s / 2 - 0.5, s / 2 - 0.5)
        rotation = np.vstack([cv2.getRotationMatrix2D(centre, params["angle"], 1.0), [0, 0, 1]])
        return (rotation @ flips)[:2]

    def scratch(self, name: str, shape: tuple, dtype) -> np.ndarray:
        key = (name, shape, np.dtype(dtype).str)
        if key not in self._scratch:
            self._scratch[key] = np.empty(shape, dtype=dtype)
        return self._scratch[key]

    def __call__(
        self, stack16: np.ndarray, label: np.ndarray, norm: tuple[float, float], seed: int, out: tuple,
    ) -> None:
        """HU float16 (C, X, Y) + label uint8 (X, Y) -> `out` = (image (C, S, S) float32 or float16, mask
        (S, S) uint8 or float32), torch tensors of the batch."""
        import cv2
        import torch

        params = self.params(seed)
        matrix = self.matrix(params)
        s = self.size
        resize = stack16.shape[1:] != (s, s)
        if matrix is None and not resize:
            normalise_into(out[0], stack16, norm)
            out[1].numpy()[...] = label  # a cast to float32 where the batch holds it so
            return
        planes = self.scratch("normalised", stack16.shape, np.float32)
        normalise_into(torch.from_numpy(planes), stack16, norm)
        direct = out[0].dtype == torch.float32 and out[0].is_contiguous()
        image_to = out[0].numpy() if direct else self.scratch("image", (len(planes), s, s), np.float32)
        mask_direct = out[1].dtype == torch.uint8 and out[1].is_contiguous()
        mask_to = out[1].numpy() if mask_direct else self.scratch("mask", (s, s), np.uint8)
        if matrix is None:  # only the resize (nothing at all returned above): straight into the batch
            self._resized(planes, cv2.INTER_LINEAR, image_to)
            self._resized(label[None], cv2.INTER_NEAREST_EXACT, mask_to[None])
        else:
            mask = label
            if resize:
                resized = self.scratch("resized", image_to.shape, np.float32)
                planes = self._resized(planes, cv2.INTER_LINEAR, resized)
                resized_mask = self.scratch("resized mask", (1, s, s), np.uint8)
                mask = self._resized(label[None], cv2.INTER_NEAREST_EXACT, resized_mask)[0]
            self._flip_or_rotate(planes, mask, params, matrix, image_to, mask_to)
        if not direct:
            out[0].copy_(torch.from_numpy(image_to))
        if not mask_direct:
            out[1].copy_(torch.from_numpy(mask_to))

    def _flip_or_rotate(self, planes, mask, params: dict, matrix, image_to, mask_to) -> None:
        """planes (C, S, S) float32 and mask (S, S) uint8 -> image_to, mask_to: flips only with `cv2.flip`
        (exact, as albumentations'), else one `warpAffine` of the whole matrix, zeros outside."""
        import cv2

        if not params["angle"]:
            code = -1 if params["hflip"] and params["vflip"] else (1 if params["hflip"] else 0)
            for plane, to in zip(planes, image_to, strict=True):
                cv2.flip(plane, code, dst=to)
            cv2.flip(mask, code, dst=mask_to)
            return
        s = self.size
        border = {"borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
        for plane, to in zip(planes, image_to, strict=True):
            cv2.warpAffine(plane, matrix, (s, s), dst=to, flags=cv2.INTER_LINEAR, **border)
        cv2.warpAffine(mask, matrix, (s, s), dst=mask_to, flags=cv2.INTER_NEAREST, **border)

    def _resized(self, planes: np.ndarray, interpolation: int, to: np.ndarray) -> np.ndarray:
        """Each plane resized to S x S as albumentations' Resize does (cv2.resize), into `to` (N, S, S)."""
        import cv2

        s = self.size
        for plane, into in zip(planes, to, strict=True):
            cv2.resize(plane, (s, s), dst=into, interpolation=interpolation)
        return to


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
    `augment` is `build_augmentation`'s: a `FlipRotate` or an albumentations pipeline.

    For albumentations, normalisation runs first because its rotation and resize need float32 (cv2 has no
    float16 warp): one contiguous float16 -> float32 cast and normalisation (`normalise_float16`). Each
    channel goes through albumentations as its own (X, Y) plane, one call with the same draws for all
    (`plane_key`): against one (X, Y, C) image this needs no interleaving copy either way, and cv2 warps and
    flips the planes faster (1.13 against 1.75 ms of CPU a v5 sample, 512 x 512 x 3); the results agree to
    float32 rounding (tests/data/test_augment_device.py).
    """
    import torch

    if isinstance(augment, FlipRotate):
        if out is None:
            s = augment.size
            out = (torch.empty((len(stack16), s, s), dtype=torch.float32),
                   torch.empty((s, s), dtype=torch.uint8))
        augment(stack16, label, norm, seed, out)
        return out
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
