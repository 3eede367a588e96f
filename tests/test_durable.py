"""Crash-safe writes shared by the spool, the calibration store and the worklist cache."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway import durable


def test_write_atomic_replaces_whole_and_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.dcm"
    durable.write_atomic(target, b"old")
    durable.write_atomic(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600  # patient data: owner only
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.dcm"]  # no temp file left


def test_failed_write_keeps_the_old_content_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "file.json"
    durable.write_atomic(target, b"old")

    def full_disk(path: Path, data: bytes, mode: int = 0o600) -> None:
        path.write_bytes(data[:1])  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable, "write_new_file", full_disk)
    with pytest.raises(OSError, match="No space"):
        durable.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_write_new_file_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "x"
    durable.write_new_file(target, b"1")
    with pytest.raises(FileExistsError):
        durable.write_new_file(target, b"2")
    assert target.read_bytes() == b"1"
