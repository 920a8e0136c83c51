"""Sizes and full disks in words."""

from __future__ import annotations

import errno
import os

from liverctl.disk import human_bytes, is_disk_full, mount_point, no_space_error


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 1023, 1536, 3 << 30, 5 << 40)] == ["0 B", "1023 B", "1.5 KB", "3.0 GB", "5.0 TB"]
    # a header claiming 1e30 bytes was "888178433064960.0 PB"
    assert [human_bytes(n) for n in (3 << 50, 9999 << 50, 1e30)] == ["3.0 PB", "9999.0 PB", "8.9e+14 PB"]


def test_mount_point_of_a_path_not_yet_written(tmp_path):
    where = mount_point(tmp_path / "not" / "yet" / "there.nii.gz")
    assert os.path.ismount(where) and str(tmp_path).startswith(where)


def test_mount_point_of_a_path_through_a_link_to_another_disk(tmp_path, monkeypatch):
    """`--runs-dir runs` where runs -> /mnt/big (a tmpfs here): 'train' said '... need about 427.8 MB but / has
    200.0 MB free', the free space of /mnt/big under the name of the disk that holds the link. The disk named is
    now the one the link leads to, whose space was counted."""
    big = tmp_path / "big"
    big.mkdir()
    (tmp_path / "runs").symlink_to(big)
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == str(big) or real_ismount(p))
    assert mount_point(tmp_path / "runs" / "r2" / "checkpoints") == str(big)
    assert mount_point(big / "r2") == str(big)


def test_disk_full_is_recognised_and_said_in_one_line(tmp_path):
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(PermissionError(errno.EACCES, "Permission denied"))
    message = str(no_space_error(tmp_path, "submission.csv"))
    assert message == f"{tmp_path}: no space left on {mount_point(tmp_path)} while writing submission.csv"
    assert "\n" not in message
