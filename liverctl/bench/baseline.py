"""The notebook pipeline, rebuilt faithfully so that `liverctl bench` can race liverctl against it.

Kept here and only here: nothing in liverctl proper uses it. What the notebooks did (DESIGN.md):
- a cache build that loads every NIfTI with `get_fdata()`, windows each slice to [0, 1] and saves it as
  its own float16 `.npy` file (labels likewise, one uint8 `.npy` per slice), in one process;
- a Dataset that `np.load`s the three files of a 2.5D sample (z-1, z, z+1, clamped at the ends), stacks
  them channels-last and runs the albumentations pipeline, under `DataLoader(num_workers=0)`;
- prediction one slice at a time, horizontal-flip TTA, and the classic Kaggle RLE snippet;
- largest-connected-component clean-up through `scipy.ndimage.label`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

INDEX_FILE = "index.json"


@dataclass(frozen=True)
class CacheRow:
    """One training sample of the cache: slice `z` of `case`, which has `depth` slices."""

    case: str
    z: int
    depth: int


def window_to_unit(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip HU to `window` and scale to [0, 1] (float32, same shape)."""
    lo, hi = window
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def build_notebook_cache(
    cases: list[tuple[str, Path, Path | None]],
    cache_dir: Path,
    window: tuple[float, float] = (-100.0, 200.0),
    liver_labels: tuple[int, ...] = (1,),
) -> list[CacheRow]:
    """Write the per-slice `.npy` cache of `cases` (case id, volume file, label file or None).

    Layout: `cache_dir/images/<case>_<z>.npy` float16 (X, Y) in [0, 1],
    `cache_dir/masks/<case>_<z>.npy` uint8 (X, Y), and `index.json` listing every slice.
    """
    from liverctl.data.nifti import open_nifti

    images, masks = cache_dir / "images", cache_dir / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    rows: list[CacheRow] = []
    for case, volume_path, label_path in cases:
        volume = open_nifti(volume_path).get_fdata()  # float64, as the notebooks did
        label = None
        if label_path is not None:
            label = np.isin(open_nifti(label_path).get_fdata(), liver_labels).astype(np.uint8)
        depth = volume.shape[-1]
        for z in range(depth):
            np.save(images / f"{case}_{z}.npy", window_to_unit(volume[..., z], window).astype(np.float16))
            if label is not None:
                np.save(masks / f"{case}_{z}.npy", label[..., z])
            rows.append(CacheRow(case, z, depth))
    (cache_dir / INDEX_FILE).write_text(json.dumps([[r.case, r.z, r.depth] for r in rows]))
    return rows


def load_cache_rows(cache_dir: Path) -> list[CacheRow]:
    return [CacheRow(c, z, d) for c, z, d in json.loads((cache_dir / INDEX_FILE).read_text())]


def notebook_transform(augment: bool, rotate_limit: float = 10.0, size: int = 512):
    """The notebooks' albumentations pipeline: resize, flips and a small rotation (or only the resize),
    then ToTensorV2. The same transforms and probabilities as
    `liverctl.data.augment_cpu.albumentations_pipeline`.
    """
    import albumentations as A
    import cv2
    from albumentations.pytorch import ToTensorV2

    steps = [A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)]
    if augment:
        steps += [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.Rotate(limit=rotate_limit, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
        ]
    return A.Compose([*steps, ToTensorV2()])


class NotebookSliceDataset(torch.utils.data.Dataset):
    """2.5D samples read from the `.npy` cache, three files per sample.

    Shape: item -> image float32 (3, X, Y), mask float32 (1, X, Y).
    """

    def __init__(self, cache_dir: Path, rows: list[CacheRow], transform=None):
        self.cache_dir = Path(cache_dir)
        self.rows = rows
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        zs = (max(row.z - 1, 0), row.z, min(row.z + 1, row.depth - 1))
        image = np.stack(
            [np.load(self.cache_dir / "images" / f"{row.case}_{z}.npy") for z in zs], axis=-1
        ).astype(np.float32)
        mask = np.load(self.cache_dir / "masks" / f"{row.case}_{row.z}.npy").astype(np.float32)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        else:
            image, mask = torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(mask)
        return image, mask[None]


def notebook_loader(dataset: NotebookSliceDataset, batch_size: int, seed: int = 0):
    """How the notebooks ran it: shuffled, single process (`num_workers=0`)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=0, generator=generator
    )


def read_cache_window(cache_dir: Path, row: CacheRow) -> np.ndarray:
    """The read path alone: the three slices of one 2.5D window, as float32 like the Dataset uses them.

    Shape: (3, X, Y).
    """
    zs = (max(row.z - 1, 0), row.z, min(row.z + 1, row.depth - 1))
    return np.stack([np.load(cache_dir / "images" / f"{row.case}_{z}.npy") for z in zs]).astype(np.float32)


def notebook_rle(mask: np.ndarray) -> str:
    """The classic Kaggle RLE snippet on one (X, Y) slice, column-major, 1-indexed; empty -> ''."""
    pixels = np.concatenate([[0], mask.flatten(order="F"), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def notebook_largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 3D connected component (scipy.ndimage.label, 26-connectivity). Shape kept."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


@torch.no_grad()
def notebook_predict_slices(model, volume_unit: np.ndarray, zs: list[int], threshold: float = 0.5) -> np.ndarray:
    """Predict slices one at a time (batch 1) with horizontal-flip TTA, as the notebooks did.

    Shape: volume_unit float32 (X, Y, Z) in [0, 1] -> masks bool (len(zs), X, Y).
    """
    depth = volume_unit.shape[-1]
    out = []
    for z in zs:
        stack = np.stack([volume_unit[..., min(max(k, 0), depth - 1)] for k in (z - 1, z, z + 1)])
        x = torch.from_numpy(stack[None].astype(np.float32))
        prob = torch.sigmoid(model(x))
        prob = (prob + torch.sigmoid(model(x.flip(-1))).flip(-1)) / 2
        out.append((prob[0, 0] > threshold).numpy())
    return np.stack(out)
