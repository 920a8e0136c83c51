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


def with_header_fields(path: Path, **fields) -> Path:
    """Rewrite fields of a saved file's header as given, past the fixes nibabel makes when it saves
    (e.g. `srow_x=[nan, 0, 0, 0]`, `pixdim=[...]`)."""
    compressed = path.name.endswith(".gz")
    raw = bytearray(gzip.decompress(path.read_bytes()) if compressed else path.read_bytes())
    header = nib.Nifti1Header(bytes(raw[:348]), check=False)
    for name, value in fields.items():
        header[name] = value
    raw[:348] = header.binaryblock
    path.write_bytes(gzip.compress(bytes(raw), 9) if compressed else bytes(raw))
    return path
