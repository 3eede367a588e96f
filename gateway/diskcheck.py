"""Room and writability of the file systems dxgate writes to, checked before the tube fires.

Every directory that an exposure will write to (raw frame, spool file, state database) is
probed: a file is created and removed there (a read-only mount, a full inode table or a
vanished directory shows up now, not after the dose), and each distinct file system must keep
its free-bytes and free-inodes minimum after everything the exposure will put on it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import DxgateError

LOGGER = logging.getLogger(__name__)

PROBE_PREFIX = ".dxgate-probe-"


class NoRoom(DxgateError):
    """A directory dxgate must write to is not writable, or its file system is (nearly) full."""


@dataclass(frozen=True)
class Need:
    """What one exposure will write into a directory."""

    bytes: int
    files: int = 1


def check_room(needs: Mapping[Path, Need], *, min_free_bytes: int, min_free_inodes: int) -> None:
    """Raise NoRoom unless every directory is writable and every file system keeps its minimum
    free bytes and inodes after receiving what `needs` says. Needs on one file system add up."""
    per_fs: dict[int, tuple[list[Path], int, int]] = {}
    for directory, need in needs.items():
        probe(directory)
        dev = os.stat(directory).st_dev
        dirs, b, f = per_fs.get(dev, ([], 0, 0))
        per_fs[dev] = (dirs + [directory], b + need.bytes, f + need.files)
    for dirs, need_bytes, need_files in per_fs.values():
        st = os.statvfs(dirs[0])
        free_bytes = st.f_bavail * st.f_frsize
        where = ", ".join(str(d) for d in dirs)
        if free_bytes - need_bytes < min_free_bytes:
            raise NoRoom(f"file system of {where} has {free_bytes} bytes free; the next exposure needs "
                         f"{need_bytes} and at least {min_free_bytes} must stay free: acquisition refused "
                         "until space is freed (spooled images are never deleted to make room)")
        # f_files == 0: the file system has no fixed inode table (btrfs, some network mounts)
        if st.f_files and st.f_favail - need_files < min_free_inodes:
            raise NoRoom(f"file system of {where} has {st.f_favail} free inodes; the next exposure needs "
                         f"{need_files} and at least {min_free_inodes} must stay free: acquisition refused "
                         "until files are freed")


def probe(directory: Path) -> None:
    """Create and remove a file in `directory`; NoRoom naming the directory if that fails."""
    path = Path(directory) / f"{PROBE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise NoRoom(f"cannot write in {directory}: {exc.strerror or exc}: acquisition refused") from None
    os.close(fd)
    try:
        os.unlink(path)
    except OSError as exc:
        raise NoRoom(f"cannot remove a file in {directory}: {exc.strerror or exc}: acquisition refused") from None
