"""Counting the reads of a file: `count_reads(monkeypatch, name)` -> the list every read of a file whose name
holds `name` is appended to as it happens (`open` for reading, `Path.read_bytes`)."""

from __future__ import annotations


def count_reads(monkeypatch, name: str) -> list[str]:
    """Every read of a file whose name holds `name` (`open` for reading, `Path.read_bytes`), as they happen."""
    import builtins
    import pathlib

    reads: list[str] = []
    real_open, real_read_bytes = builtins.open, pathlib.Path.read_bytes

    def counting_open(file, mode="r", *args, **kwargs):
        if name in str(file) and "r" in mode and "+" not in mode:
            reads.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def counting_read_bytes(path):
        if name in str(path):
            reads.append(str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(pathlib.Path, "read_bytes", counting_read_bytes)
    return reads
