"""NIfTI files a stranger could send: headers that claim what the file does not hold."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np


def header_only(path: Path, dims: list[int], dtype=np.int16, compress: bool | None = None) -> Path:
    """A file holding a NIfTI header that claims `dims` and (almost) no voxel data."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header["dim"] = [len(dims), *dims] + [1] * (7 - len(dims))
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4
    compress = path.name.endswith(".gz") if compress is None else compress
    path.write_bytes(gzip.compress(raw, 9) if compress else raw)
    return path
