"""Crash-safe file writes shared by every stage that keeps something on disk.

A file is written under a temporary name in its final directory, fsynced, renamed into
place and the directory fsynced: after a crash at any instant the final name holds either
the old content (or nothing) or the complete new content, never a half file.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path

Chunks = bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview]

TEMP_SUFFIX = ".part"


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(directory: Path) -> None:
    """Create missing directories, fsyncing each new one's parent so the entry survives a crash."""
    missing = []
    p = directory
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def write_new_file(path: Path, data: Chunks, mode: int = 0o600) -> None:
    """Create `path` (it must not exist) with `data` (bytes, or a sequence of buffers written one
    after the other, so a header and a frame's pixels need not be joined into one copy), fsynced;
    the caller fsyncs the directory. Owner-only by default: spool files and caches hold patient data.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        for chunk in ([data] if isinstance(data, bytes | bytearray | memoryview) else data):
            view = memoryview(chunk).cast("B")
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: Chunks, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically and durably. Raises OSError; leaves no temp file."""
    makedirs_durable(path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()
        write_new_file(tmp, data, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def open_state_db(database: Path | str, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection to the state database for a small table of its own (users, audit): the file
    created owner-only (it holds patient and security data), WAL, synchronous=FULL, autocommit
    (the caller opens its transactions), shareable across threads under the caller's lock."""
    fd = os.open(database, os.O_RDWR | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    os.close(fd)
    db = sqlite3.connect(str(database), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db
