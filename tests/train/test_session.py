"""train/session.py: what a run records about its software."""

from __future__ import annotations

import sys
from importlib import metadata

import torch

import liverctl
from liverctl.train.session import versions


def test_versions_are_read_without_importing_the_libraries(monkeypatch):
    # importing albumentations to read its version cost every trainer process, each torchrun rank, about a second
    monkeypatch.delitem(sys.modules, "albumentations", raising=False)
    found = versions()
    assert "albumentations" not in sys.modules
    assert found["albumentations"] == metadata.version("albumentations")
    assert found["torch"] == torch.__version__ and found["liverctl"] == liverctl.__version__  # imported: their own
