"""The training step's side of a batch: transfer, cast, normalisation and batched augmentation on the device.

Workers hand over what the store holds, small (`liverctl.data.dataset.SliceDataset.batch`), a dict of tensors:

    image  float16 (B, C, H, W)  HU as stored (device path), or already normalised and augmented (cpu path)
    mask   uint8   (B, 1, H, W)  1 = liver
    norm   float32 (B, 2)        (lo, hi): x -> clip((x - lo) / (hi - lo), 0, 1); (0, 1) when already done
    size   int32   (B, 2)        each sample's own (X, Y); a batch of mixed sizes is zero-padded to (H, W)
    seed   int64   (B,)          the sample's augmentation seed
    normalised  bool ()          True on the cpu path: image is in [0, 1] already (norm is then (0, 1))
    slot   int32   (3,)          the worker's shared-memory slot (`liverctl.data.handover`), released by
                                 `SliceDataset.finish`: image and mask are valid until then

`finish_batch` turns it into image float32 (B, C, S, S) in [0, 1] and mask float32 (B, 1, S, S) on the
device, S = data.input_size. On the device path it also augments, as the cpu path does in the workers
(`liverctl.data.augment_cpu.build_augmentation`), with the same transforms, order and parameters:

    resize to S -> horizontal flip (p 0.5) -> vertical flip (p 0.5) -> rotate +-rotate_limit (p 0.5)
    [distort: -> grid distortion (p 0.3, 5 steps, +-0.3) -> elastic (p 0.3, alpha 1, sigma 50)]

As on the cpu path, the resize is its own step (`resize_grids`, one `grid_sample` for the batch, only where a
slice is not S x S): clamped at the slice's own border as cv2's resize, so a grown slice keeps its edge pixels
and no sample reads the padding of a batch of mixed sizes. The other transforms are maps from output to input
coordinates composed into one sampling grid per sample (`sampling_grid`) and applied with one `grid_sample`:
bilinear for the image, nearest for the mask, zeros outside. Both paths warp the normalised image, so that
fill is 0 = the bottom of the window (air and anything below it), the cpu path's constant border; filled
before normalisation it would be 0 HU, water. Grid distortion is a separable piecewise-linear displacement,
elastic a Gaussian-smoothed random displacement field. Every random draw comes from
`numpy.random.default_rng(seed)` of the sample, on the CPU, so a run is reproducible and the CPU and CUDA
results agree. The cpu path of none and flip_rotate (`liverctl.data.augment_cpu.FlipRotate`) takes the same
draws (`sample_params`): there a seed gives the same sample on both paths.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

ROTATE_P, FLIP_P = 0.5, 0.5
GRID_P, GRID_STEPS, GRID_LIMIT = 0.3, 5, 0.3  # albumentations GridDistortion defaults
ELASTIC_P, ELASTIC_ALPHA, ELASTIC_SIGMA = 0.3, 1.0, 50.0  # albumentations ElasticTransform defaults


def resolve_augment_on(cfg: dict, device: Any) -> str:
    """"device" or "cpu": where `data.augment_on` puts normalisation and augmentation for `device`."""
    want = cfg["data"].get("augment_on", "auto")
    if want == "auto":
        return "device" if str(getattr(device, "type", device)).startswith("cuda") else "cpu"
    return want


def sample_params(seed: int, cfg: dict) -> dict[str, Any]:
    """The random draws of one sample's augmentation, a pure function of (seed, config)."""
    data = cfg["data"]
    rng = np.random.default_rng(int(seed))
    out: dict[str, Any] = {"hflip": False, "vflip": False, "angle": 0.0, "grid": None, "elastic": None}
    if data["augment"] in ("flip_rotate", "distort"):
        out["hflip"] = bool(rng.random() < FLIP_P)
        out["vflip"] = bool(rng.random() < FLIP_P)
        limit = float(data["rotate_limit"])
        if rng.random() < ROTATE_P:
            out["angle"] = float(rng.uniform(-limit, limit))
    if data["augment"] == "distort":
        if rng.random() < GRID_P:
            out["grid"] = 1.0 + rng.uniform(-GRID_LIMIT, GRID_LIMIT, size=(2, GRID_STEPS))
        if rng.random() < ELASTIC_P:
            out["elastic"] = int(rng.integers(0, 2**31 - 1))
    return out


def identity_params() -> dict[str, Any]:
    """The draws of no augmentation (only the resize): `sample_params` with augment none."""
    return sample_params(0, {"data": {"augment": "none"}})


def moves(params: dict[str, Any]) -> bool:
    """Whether these draws move any pixel (a flip, a rotation or a distortion fired)."""
    return bool(params["hflip"] or params["vflip"] or params["angle"]) or any(
        params[key] is not None for key in ("grid", "elastic"))


def _piecewise(coord, knots):
    """Grid distortion along one axis. Shape: coord (B, S, S) in [-1, 1], knots (B, n + 1) -> (B, S, S)."""
    import torch

    n = knots.shape[1] - 1
    t = ((coord + 1) / 2 * n).clamp(0, n)
    k = t.floor().clamp(max=n - 1)
    frac = t - k
    k = k.long().flatten(1)
    lo = torch.gather(knots, 1, k).view_as(coord)
    hi = torch.gather(knots, 1, k + 1).view_as(coord)
    return lo + frac * (hi - lo)


def _elastic_field(seed: int, size: int, device, dtype):
    """alpha * Gaussian(sigma)-smoothed N(0, 1) noise in pixels, as albumentations draws it (noise
    scaled to max |1| before blurring), computed on a coarse grid and upsampled. Shape: (2, size, size)."""
    import torch
    import torch.nn.functional as F

    step = max(1.0, ELASTIC_SIGMA / 4)  # the field is smooth at this spacing
    coarse = max(2, math.ceil(size / step) + 1)
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.standard_normal((2, 1, coarse, coarse)).astype(np.float32)).to(device)
    sigma = ELASTIC_SIGMA / step
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    field = F.conv2d(F.pad(noise, (radius,) * 4, mode="replicate"), kernel.view(1, 1, 1, -1))
    field = F.conv2d(field, kernel.view(1, 1, -1, 1))
    # a coarse cell holds step^2 fine voxels of noise: same smoothed std as blurring the fine noise
    expected_max = math.sqrt(2 * math.log(2 * size * size))
    field = field * (ELASTIC_ALPHA / (step * expected_max))
    field = F.interpolate(field, size=(size, size), mode="bilinear", align_corners=True)
    return field[:, 0].to(dtype)


def _pixel_centres(size: int, device):
    """Normalised coordinates of the centres of `size` pixels (align_corners=False). Shape: (size,)."""
    import torch

    return (torch.arange(size, device=device, dtype=torch.float32) * 2 + 1) / size - 1


@functools.cache
def nearest_exact_index(source: int, size: int) -> np.ndarray:
    """The source pixel each of `size` output pixels takes in cv2's INTER_NEAREST_EXACT resize of `source`
    pixels: the one under the output pixel's centre, floor((i + 0.5) * source / size), except that cv2
    breaks some exact ties the other way (i = 4 of 64 -> 96 takes 2, not 3). Taken from cv2 itself, so that
    the cpu path's masks and validation's (`dataset.ValidationDataset`) and the device path's agree."""
    import cv2

    row = np.arange(source, dtype=np.float32)[None]
    return cv2.resize(row, (size, 1), interpolation=cv2.INTER_NEAREST_EXACT)[0].astype(np.int64)


def resize_grids(sizes, padded: tuple[int, int], out_size: int, device):
    """Each sample's resize to S as cv2's (`liverctl.data.augment_cpu.FlipRotate`, `dataset.resize_stack`):
    output pixel centres -> the sample's own (X, Y), clamped at its outermost pixel centres (cv2 replicates
    the border, so a grown slice keeps its edge pixels, and nothing is read from the padding of a batch of
    mixed sizes), then placed in the padded (H, W) batch.

    Shape: -> bilinear grid (B, S, S, 2) for the image, nearest grid (B, S, S, 2) for the mask, float32;
    [..., 0] indexes W (the last axis), [..., 1] indexes H. The nearest grid points at the centres of the
    source pixels `nearest_exact_index` picks, so no tie is left to `grid_sample`'s rounding.
    """
    import torch

    b, s = len(sizes), out_size
    own_sizes = [tuple(int(n) for n in size) for size in sizes]
    sizes = torch.tensor(own_sizes, dtype=torch.float32, device=device).view(b, 2, 1)
    centres = _pixel_centres(s, device).view(1, 1, s)  # the same normalised coordinates in each sample's extent
    edge = 1 - 1 / sizes  # (B, 2, 1): the outermost pixel centres
    linear = torch.minimum(torch.maximum(centres, -edge), edge)
    index = np.stack([[nearest_exact_index(n, s) for n in size] for size in own_sizes])
    nearest = (2 * torch.from_numpy(index).to(device) + 1) / sizes - 1
    scale = sizes / torch.tensor(padded, dtype=torch.float32, device=device).view(1, 2, 1)

    def grid(coords):  # (B, 2, S): rows' (H) then columns' (W) coordinates -> (B, S, S, 2) in the batch
        rows, cols = (coords * scale + (scale - 1)).unbind(1)
        return torch.stack(torch.broadcast_tensors(cols.view(b, 1, s), rows.view(b, s, 1)), dim=-1)

    return grid(linear), grid(nearest)


def sampling_grid(params: list[dict[str, Any]], out_size: int, device):
    """One grid per sample of the flips, rotation and distortions, output (S, S) -> input (S, S), both the
    resized plane, in normalised coordinates.

    Shape: -> (B, S, S, 2), float32; grid[..., 0] indexes W (the last axis), grid[..., 1] indexes H.
    """
    import torch

    b, s = len(params), out_size
    lin = _pixel_centres(s, device)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    x = gx.expand(b, s, s).clone()
    y = gy.expand(b, s, s).clone()
    # last transform first: elastic, grid distortion, rotation, flips
    for i, p in enumerate(params):
        if p["elastic"] is not None:
            d = _elastic_field(p["elastic"], s, device, torch.float32) * (2.0 / s)
            x[i] += d[0]
            y[i] += d[1]
    grid_rows = [i for i, p in enumerate(params) if p["grid"] is not None]
    if grid_rows:
        steps = torch.tensor(np.stack([params[i]["grid"] for i in grid_rows]), dtype=torch.float32, device=device)
        knots = torch.cat([torch.zeros_like(steps[:, :, :1]), steps.cumsum(-1)], dim=-1)
        knots = knots / knots[:, :, -1:] * 2 - 1  # cells scaled by (1 + d), still covering [-1, 1]
        idx = torch.tensor(grid_rows, device=device)
        x[idx] = _piecewise(x[idx], knots[:, 0])
        y[idx] = _piecewise(y[idx], knots[:, 1])
    angle = torch.tensor([math.radians(p["angle"]) for p in params], device=device).view(b, 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    x, y = cos * x - sin * y, sin * x + cos * y
    hflip = torch.tensor([-1.0 if p["hflip"] else 1.0 for p in params], device=device).view(b, 1, 1)
    vflip = torch.tensor([-1.0 if p["vflip"] else 1.0 for p in params], device=device).view(b, 1, 1)
    return torch.stack([x * hflip, y * vflip], dim=-1)


def warp(image, mask, params, sizes, out_size: int):
    """Resize each sample to S (`resize_grids`: clamped at its own border, as cv2), then flip, rotate and
    distort it (`sampling_grid`): 0 where that uncovers the plane, the cpu path's constant border.
    Shape: image float (B, C, H, W) normalised, mask float (B, 1, H, W) -> (B, C, S, S), (B, 1, S, S).

    Two `grid_sample` calls where slices are resized, as the cpu path interpolates twice (cv2.resize, then
    cv2.warpAffine on the S x S plane): one composed grid cannot both clamp the resize at the slice's edge and
    fill what the rotation uncovers, and it blurs less than the cpu path does (0.1 apart on average on noise
    at 96 -> 64). The second call is skipped where no sample is moved, the first where all are S x S already.
    """
    import torch.nn.functional as F

    s = out_size
    if any(tuple(size) != (s, s) for size in sizes) or tuple(image.shape[-2:]) != (s, s):
        linear, nearest = resize_grids(sizes, tuple(image.shape[-2:]), s, image.device)
        image = F.grid_sample(image, linear.to(image.dtype), mode="bilinear", align_corners=False)
        mask = F.grid_sample(mask, nearest.to(mask.dtype), mode="nearest", align_corners=False)
    if not any(moves(p) for p in params):
        return image, mask
    grid = sampling_grid(params, s, image.device).to(image.dtype)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out_mask = F.grid_sample(mask, grid.to(mask.dtype), mode="nearest", padding_mode="zeros", align_corners=False)
    return out, out_mask


def normalise_on_device(image, norm):
    """HU -> [0, 1] per sample. Shape: image float16 (B, C, H, W), norm (B, 2) -> float32 (B, C, H, W)."""
    import torch

    lo = norm[:, 0].float().view(-1, 1, 1, 1)
    hi = norm[:, 1].float().view(-1, 1, 1, 1)
    span = hi - lo
    scale = torch.where(span > 0, 1.0 / span.clamp(min=1e-12), torch.zeros_like(span))
    return ((image.float() - lo) * scale).clamp_(0.0, 1.0)


def finish_batch(batch: dict, cfg: dict, device, *, augment: bool) -> tuple[Any, Any]:
    """A worker's batch -> (image float32 (B, C, S, S), mask float32 (B, 1, S, S)) on `device`.

    Transfer (`non_blocking`, from pinned memory when the loader pins), cast, normalise, and, when
    `augment` (the device path of a training loader), the seeded augmentation of each sample; otherwise
    only a resize to S where the batch is not S x S already.
    """
    norm_cpu = batch["norm"]
    done = bool(batch.get("normalised", False))  # the cpu path normalised (and clipped) in the worker
    image = batch["image"].to(device, non_blocking=True)
    mask = batch["mask"].to(device, non_blocking=True)
    x = image.float() if done else normalise_on_device(image, norm_cpu.to(device, non_blocking=True))
    m = mask.float()
    s = int(cfg["data"]["input_size"])
    sizes = batch["size"].tolist()
    seeds = batch["seed"].tolist()
    uniform = all(tuple(sz) == (s, s) for sz in sizes) and tuple(x.shape[-2:]) == (s, s)
    if augment:
        params = [sample_params(seed, cfg) for seed in seeds]
    elif uniform:
        return x, m
    else:
        params = [identity_params() for _ in seeds]
    return warp(x, m, params, sizes, s)
