"""Print one line: this Python and the versions of the stack liverctl runs on (what CI resolved)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("torch", "torchvision", "segmentation-models-pytorch", "timm", "zarr", "numcodecs", "numpy",
            "albumentations", "nibabel", "textual", "typer", "rich", "connected-components-3d", "scipy", "pytest")


def installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


print(f"stack: Python {platform.python_version()}; " + ", ".join(f"{p} {installed(p)}" for p in PACKAGES))
