"""Slices from the store as training samples: 2D / 2.5D stacks, normalisation, augmentation (the DataLoaders
over them: `liverctl.data.loaders`).

Conventions (shared with `submit`): a slice is `image[..., z]` of the store, an (X, Y) array used as
(H, W) with no transpose. A 2.5D stack holds slices z - context .. z + context (clamped at the ends)
as channels. `normalize` maps HU to [0, 1]; `resize_stack` brings a stack to the model's input size.

Randomness is a pure function of (seed, epoch, position in the epoch): the sampler yields
(row, sample_seed) pairs and the Dataset seeds its augmentation from `sample_seed`, so a resumed run
sees the same samples and augmentations whatever the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from liverctl.config import in_channels
from liverctl.data.augment_cpu import augment_sample, build_augmentation, normalise_into
from liverctl.data.handover import NO_SLOT, shared_tensor
from liverctl.errors import LiverctlError
from liverctl.plural import agree
from liverctl.printable import quoted


def norm_range(cfg: dict, stats: dict) -> tuple[float, float]:
    """(lo, hi) HU of the config's normalisation for a volume with these store stats: x -> (x - lo) / (hi - lo)."""
    data = cfg["data"]
    if data["normalize"] == "window":
        lo, hi = (float(v) for v in data["window"])
    elif data["normalize"] == "minmax":
        try:  # the store's record: anyone's zarr.json
            lo, hi = float(stats["min"]), float(stats["max"])
        except (KeyError, TypeError, ValueError, OverflowError):
            lo = hi = math.nan
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise LiverctlError(f"data.normalize minmax takes a volume's min and max from the store, where its stats "
                                f"are {quoted(stats)}; the store is damaged: run `liverctl ingest` again on the same data")
    else:
        raise LiverctlError(f"data.normalize: unknown mode {quoted(data['normalize'])} (window, minmax)")
    return lo, hi


def norm_key(cfg: dict) -> tuple:
    """What `norm_range` reads from a config: two configs with equal keys normalise any volume alike (with the
    volume's own store stats for minmax). Prediction prepares a batch once for the runs of an ensemble that agree."""
    data = cfg["data"]
    mode = data.get("normalize")
    return (mode, tuple(float(v) for v in data["window"])) if mode == "window" else (mode,)


def normalize(stack_hu: np.ndarray, cfg: dict, stats: dict) -> np.ndarray:
    """HU -> [0, 1] as the config says, with no pass over the volume (stats come from the store).

    Shape: stack_hu (C, H, W) any float/int dtype -> float32 (C, H, W).
    window: clip to data.window and scale; minmax: (x - min) / (max - min) of the whole volume.
    """
    lo, hi = norm_range(cfg, stats)
    x = np.asarray(stack_hu, dtype=np.float32)
    if not hi > lo:
        return np.zeros_like(x)
    out = (x - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def resize_stack(stack: np.ndarray, size: int) -> np.ndarray:
    """Shape: (C, H, W) float32 -> (C, size, size), bilinear: the training resize (`augment_cpu.FlipRotate`,
    albumentations' Resize, the device path's `grid_sample`), so that validation and prediction feed the model
    what it was trained on (area interpolation here once fed it other values: 0.015 apart on average at
    512 -> 128 on real CT)."""
    import cv2

    if stack.shape[1:] == (size, size):
        return stack
    hwc = np.ascontiguousarray(stack.transpose(1, 2, 0))
    out = cv2.resize(hwc, (size, size), interpolation=cv2.INTER_LINEAR)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


class SliceDataset:
    """Training samples from rows of the store's slice index, read a batch at a time.

    `dataset.batch([(row, sample_seed), ...])` (also `dataset[list]`, which the loader calls) is what a
    worker hands over: the dict of `liverctl.data.augment_device` (image float16, mask uint8, norm, size,
    seed), read from the chunks straight into the batch. `augment_on` says who augments:
    "device": the worker only reads (image = HU as stored, own size); the training step normalises and
    augments the whole batch (`finish`). "cpu": the worker normalises, augments and resizes to S
    (`liverctl.data.augment_cpu`); the step only casts (or, on the CPU, takes the batch as it is).
    `dataset[(row, seed)]` (or `dataset[row]`, seed 0) is one finished sample: image float32 (C, S, S),
    mask float32 (1, S, S), C = 2 * data.context + 1, S = data.input_size.

    Image and mask are handed over as float16 and uint8 (few bytes to copy to a GPU, which casts), except on
    the cpu path when the step runs on the CPU (`device` cpu): there the worker writes the float32 image and
    mask the model and the loss take, and `finish` uses the batch where it lies instead of casting it again
    in the training process (0.5-1 ms per 512 x 512 x 3 sample there, as much CPU as a worker's read path).
    """

    def __init__(
        self, store, rows: np.ndarray, cfg: dict, *, train: bool = True, augment_on: str = "cpu", device=None,
    ):
        if augment_on not in ("cpu", "device"):
            raise ValueError(f"augment_on must be 'cpu' or 'device', not {augment_on!r}")
        index = store.slice_index()
        self.store = store
        self.cfg = cfg
        self.context = int(cfg["data"]["context"])
        self.size = int(cfg["data"]["input_size"])
        self.rows = np.asarray(rows, dtype=np.int64)
        self.case_codes = np.asarray(index.case)[self.rows]
        self.z = np.asarray(index.z)[self.rows]
        self.liver = np.asarray(index.liver_pixels)[self.rows] > 0
        self.case_ids = list(index.case_ids)
        used = sorted(set(self.case_codes.tolist()))
        metas = {c: store.meta(self.case_ids[c]) for c in used}
        self.stats = {c: m.get("stats", {}) for c, m in metas.items()}
        self.shapes = {c: tuple(int(n) for n in m["shape"][:2]) for c, m in metas.items()}
        self.ranges = {c: norm_range(cfg, self.stats[c]) for c in used}
        self.train = train
        self.augment_on = augment_on
        self.augment = build_augmentation(cfg, train)
        self.read_only = not train or cfg["data"]["augment"] == "none"  # the augmentation would only resize
        on_cpu = device is None or getattr(device, "type", str(device)) == "cpu"
        in_place = augment_on == "cpu" and on_cpu  # the step takes the batch as it lies (`finish`)
        self.image_dtype = "float32" if in_place else "float16"  # as handed over
        self.mask_dtype = "float32" if in_place else "uint8"
        self.slots = None  # `liverctl.data.handover.SlotPool`, set by `liverctl.data.loaders.make_train_loader`
        self._in_use = None  # the slot of the batch `finish` returned in place, freed at the next `finish`

    def __len__(self) -> int:
        return len(self.rows)

    def batch_bytes(self, batch_size: int) -> int:
        """The most bytes a worker's batch of `batch_size` holds: the image as handed over (float16 or
        float32; on the device path at the slices' own size) and the mask (uint8, or float32 in place)."""
        height = width = self.size
        if self.augment_on == "device" and self.shapes:
            height = max(self.size, *(shape[0] for shape in self.shapes.values()))
            width = max(self.size, *(shape[1] for shape in self.shapes.values()))
        per_pixel = in_channels(self.cfg) * np.dtype(self.image_dtype).itemsize + np.dtype(self.mask_dtype).itemsize
        return batch_size * per_pixel * height * width

    def batch(self, items) -> dict:
        """A worker's batch of `items` ((position, seed) pairs or positions); see the class docstring."""
        import torch

        pos = [int(it[0]) if isinstance(it, tuple | list) else int(it) for it in items]
        seeds = [int(it[1]) if isinstance(it, tuple | list) else 0 for it in items]
        codes = [int(self.case_codes[p]) for p in pos]
        n, channels = len(pos), in_channels(self.cfg)
        if self.augment_on == "device":
            sizes = [self.shapes[c] for c in codes]
        else:
            sizes = [(self.size, self.size)] * n
        height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
        image_shape, mask_shape = (n, channels, height, width), (n, 1, height, width)
        image_dtype, mask_dtype = getattr(torch, self.image_dtype), getattr(torch, self.mask_dtype)
        if self.slots is not None:  # a training loader's worker: reuse a released shared-memory slot
            image, mask, slot = self.slots.buffers(image_shape, mask_shape, image_dtype, mask_dtype)
        else:
            image, mask, slot = shared_tensor(image_shape, image_dtype), shared_tensor(mask_shape, mask_dtype), NO_SLOT
        norm = torch.zeros((n, 2), dtype=torch.float32)
        norm[:, 1] = 1.0
        for i, (p, code) in enumerate(zip(pos, codes, strict=True)):
            case, z = self.case_ids[code], int(self.z[p])
            if self.augment_on == "cpu":
                self._cpu_sample(case, z, self.ranges[code], seeds[i], (image[i], mask[i, 0]))
                continue
            norm[i] = torch.tensor(self.ranges[code])
            x, y = sizes[i]
            if (x, y) == (height, width):
                self.store.read_stack(case, z, context=self.context, dtype=np.float16, out=image[i].numpy())
                self.store.read_label_slice(case, z, out=mask[i, 0].numpy())
            else:  # a batch of mixed sizes: padding maps to 0 after normalisation
                image[i].fill_(self.ranges[code][0])
                mask[i].zero_()
                image[i, :, :x, :y] = torch.from_numpy(self.store.read_stack(case, z, self.context, np.float16))
                mask[i, 0, :x, :y] = torch.from_numpy(self.store.read_label_slice(case, z))
        return {
            "image": image,
            "mask": mask,
            "norm": norm,
            "size": torch.tensor(sizes, dtype=torch.int32).view(n, 2),
            "seed": torch.tensor(seeds, dtype=torch.int64),
            "normalised": torch.tensor(self.augment_on == "cpu"),
            "slot": torch.tensor(slot, dtype=torch.int32),
        }

    def _cpu_sample(self, case: str, z: int, norm: tuple[float, float], seed: int, out: tuple) -> None:
        """One sample of the cpu path into `out` = (image (C, S, S) float16 or float32, mask (S, S) uint8 or
        float32) of the batch.

        Without augmentation a slice already S x S skips the augmentation (its resize would copy it
        unchanged): the stack is normalised straight into the batch, the label read into it.
        """
        import torch

        stack = self.store.read_stack(case, z, context=self.context, dtype=np.float16)
        if self.read_only and stack.shape[1:] == (self.size, self.size):
            normalise_into(out[0], stack, norm)
            if out[1].dtype == torch.uint8:
                self.store.read_label_slice(case, z, out=out[1].numpy())
            else:
                out[1].copy_(torch.from_numpy(self.store.read_label_slice(case, z)))
            return
        label = self.store.read_label_slice(case, z)
        augment_sample(stack, label, norm, self.augment, seed, out=out)

    def finish(self, batch: dict, device) -> tuple:
        """The training step's side: `liverctl.data.augment_device.finish_batch` with this dataset's path.

        The batch's slot is freed once `finish_batch` has made its own copies; where it returned the
        batch's own memory (float32 on the CPU) the slot stays taken until the next `finish`, i.e. while
        the step uses it.
        """
        from liverctl.data.augment_device import finish_batch

        out = finish_batch(batch, self.cfg, device, augment=self.train and self.augment_on == "device")
        if self.slots is None or "slot" not in batch:
            return out
        if self._in_use is not None:
            self.slots.release(*self._in_use)
            self._in_use = None
        # keep the segment mapped for the slot's next batch (not a pinned copy: pin_memory made one)
        mapped = (batch["image"], batch["mask"]) if batch["image"].is_shared() else ()
        slot = batch["slot"].tolist()
        if out[0].untyped_storage().data_ptr() == batch["image"].untyped_storage().data_ptr():
            self._in_use = (slot, mapped)
        else:
            self.slots.release(slot, mapped)
        return out

    def __getitem__(self, item):
        if isinstance(item, list):
            return self.batch(item)
        image, mask = self.finish(self.batch([item]), "cpu")
        return image[0], mask[0]


class ValidationDataset(SliceDataset):
    """Whole held-out cases for validation, one batch never spanning two cases.

    Item: image float32 (C, S, S), resized mask uint8 (1, S, S) for the loss (the consumer casts it on
    the device), the full-size label uint8 (X, Y) for the Dice counts, the case code and z.
    The image stays float32, normalised (`normalize`) and resized (`resize_stack`) exactly as `predict`
    does it, so that the Dice that picks the best checkpoint is the Dice `evaluate` gives its masks
    (a float16 hand-over rounds the model's input and moves that Dice in the 6th digit).
    """

    def __init__(self, store, rows: np.ndarray, cfg: dict):
        super().__init__(store, rows, cfg, train=False)

    def __getitem__(self, item):
        import cv2
        import torch

        i = int(item[0] if isinstance(item, tuple) else item)
        code, z = int(self.case_codes[i]), int(self.z[i])
        case = self.case_ids[code]
        stack = self.store.read_stack(case, z, context=self.context)
        label = (self.store.read_label_slice(case, z) > 0).astype(np.uint8)
        image = resize_stack(normalize(stack, self.cfg, self.stats[code]), self.size)
        small = cv2.resize(label, (self.size, self.size), interpolation=cv2.INTER_NEAREST_EXACT)  # on the image
        return torch.from_numpy(image), torch.from_numpy(small[None]), torch.from_numpy(label), code, z

    def case_batches(self, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
        """Batches of positions, grouped by case; under DDP each rank takes every world-th case."""
        cases = sorted(set(self.case_codes.tolist()))[rank::world]
        batches = []
        for code in cases:
            pos = np.flatnonzero(self.case_codes == code)
            pos = pos[np.argsort(self.z[pos], kind="stable")]
            batches += [pos[i : i + batch_size].tolist() for i in range(0, len(pos), batch_size)]
        return batches


class EpochSampler:
    """Samples for one epoch, a pure function of (seed, epoch): uniform permutation, or liver slices
    drawn `liver_oversample` times as often (with replacement). Under DDP every rank draws the same
    sequence and keeps positions rank, rank + world, ... (like DistributedSampler).

    Yields (dataset position, sample_seed); `num_samples` per rank (default: one pass). `start` skips
    the samples already seen (resume mid-epoch).
    """

    def __init__(
        self,
        liver: np.ndarray,
        oversample: float,
        seed: int,
        *,
        rank: int = 0,
        world: int = 1,
        num_samples: int | None = None,
    ):
        self.weights = np.where(liver, float(oversample), 1.0)
        self.uniform = float(oversample) == 1.0
        self.seed, self.rank, self.world = int(seed), rank, world
        self.epoch, self.start = 0, 0
        self.num_samples = num_samples or math.ceil(len(liver) / world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def order(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.num_samples * self.world
        n = len(self.weights)
        if self.uniform:
            pos = np.concatenate([rng.permutation(n) for _ in range(-(-total // n))])[:total]
        else:
            pos = rng.choice(n, size=total, replace=True, p=self.weights / self.weights.sum())
        seeds = rng.integers(0, 2**31 - 1, size=total)
        return pos[self.rank :: self.world], seeds[self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos, seeds = self.order()
        for p, s in zip(pos[self.start :], seeds[self.start :], strict=True):
            yield int(p), int(s)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def split_rows(store, fold: int, max_val_cases: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index rows of the training cases outside `fold` and of the held-out cases in it.

    Train-only cases (fold code `TRAIN_ONLY_FOLD`, the extra sources) are always on the training side.
    """
    from liverctl.data.schema import SPLIT_CODES, TRAIN, TRAIN_ONLY_FOLD

    index = store.slice_index()
    training = np.asarray(index.split) == SPLIT_CODES[TRAIN]
    folds = np.asarray(index.fold)
    valid = sorted({f for f in folds[training].tolist() if f >= 0})
    where = (f"the store's training cases are in {agree(len(valid), 'fold', 'folds')} "
             f"{', '.join(map(str, valid)) or 'none'}" + (f": choose one with --set data.fold={valid[0]}" if valid else ""))
    if fold < 0:  # was "data.fold must be one of the store's folds [0, 2], not -1": a Python list, nothing to do
        raise LiverctlError(f"fold {fold} is no fold; {where}")
    train_rows = np.flatnonzero(training & (folds != fold) & ((folds >= 0) | (folds == TRAIN_ONLY_FOLD)))
    val_rows = np.flatnonzero(training & (folds == fold))
    if max_val_cases > 0 and len(val_rows):
        codes = sorted(set(np.asarray(index.case)[val_rows].tolist()))[:max_val_cases]
        val_rows = val_rows[np.isin(np.asarray(index.case)[val_rows], codes)]
    if not len(val_rows):
        raise LiverctlError(f"fold {fold} has no training cases to validate on; {where}")
    if not len(train_rows):
        raise LiverctlError(f"no training cases outside fold {fold}: every training case of the store is in it; deal "
                            f"them into more folds: liverctl ingest DATA --store {store.path} --folds 5")
    return train_rows, val_rows
