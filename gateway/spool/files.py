"""Spool files on disk: atomic, fsynced writes and the layout that names them.

A file is written to a temp name in its final directory, flushed, fsynced, renamed into
place and the directory fsynced, so a crash at any instant leaves either the old state, a
temp file (removed at the next start) or the complete file — never a half file under its
final name.

Each file is recorded with two digests of its bytes: its sha256, the content's identity
(duplicate suppression), and its xxh3_128, a fast non-cryptographic digest checked before
the file leaves (it finds bit rot, truncation and overwrite, at ~20 GB/s against sha256's
~1.4; an adversary who could rewrite files could rewrite the database as well).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import xxhash

from gateway import durable
from gateway.durable import fsync_dir
from gateway.errors import SpoolError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

LOGGER = logging.getLogger(__name__)

TEMP_SUFFIX = durable.TEMP_SUFFIX
FILE_SUFFIX = ".dcm"
_BLOCK = 1 << 20  # bytes read at a time to hash a file


def relative_path(sop_instance_uid: str) -> Path:
    """Where an instance lives under the spool root: <2 hex chars of sha256(uid)>/<uid>.dcm.

    The hashed fan-out keeps directories small; the UID as file name keeps them readable.
    """
    bucket = hashlib.sha256(sop_instance_uid.encode("ascii")).hexdigest()[:2]
    return Path(bucket) / f"{sop_instance_uid}{FILE_SUFFIX}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Digest(Protocol):
    """hashlib's and xxhash's hash objects."""

    def update(self, data: ReadableBuffer, /) -> None: ...
    def hexdigest(self) -> str: ...


def fast_digest(data: bytes) -> str:
    """The xxh3_128 of a spool file's bytes, as hex: what a send checks the file against."""
    return xxhash.xxh3_128_hexdigest(data)


def data_mismatch(data: bytes, sha256: str, xxh3_128: str | None) -> str | None:
    """None when `data` is what `put` recorded (its xxh3_128, or its sha256 for rows spooled
    before that was recorded), else the name of the digest that differs."""
    if xxh3_128:
        return None if fast_digest(data) == xxh3_128 else "xxh3_128"
    return None if sha256_hex(data) == sha256 else "sha256"


def file_mismatch(fileno: int, size: int, sha256: str, xxh3_128: str | None) -> str | None:
    """Check an open spool file's first `size` bytes (the committed size, checked by the caller)
    against what `put` recorded: None when they match, else what did not (see FileDigest)."""
    return FileDigest(fileno, size, sha256, xxh3_128).mismatch()


class FileDigest:
    """The digest of an open spool file's first `size` bytes, taken piece by piece in file order,
    checked against what `put` recorded: its xxh3_128, or its sha256 for rows spooled before the
    fast digest was recorded. Pieces are read here (1 MiB blocks; a read error is an answer:
    "unreadable"), or handed in by a caller that read them itself (`update`)."""

    def __init__(self, fileno: int, size: int, sha256: str, xxh3_128: str | None) -> None:
        self._fileno, self._size = fileno, size
        self.name, self._expected = ("xxh3_128", xxh3_128) if xxh3_128 else ("sha256", sha256)
        self._digest: _Digest = xxhash.xxh3_128() if xxh3_128 else hashlib.sha256()
        self._position = 0  # bytes hashed so far
        self._failed: str | None = None  # why the file cannot match, once known

    def read(self, end: int) -> None:
        """Hash the file up to `end`, reading it."""
        end = min(end, self._size)
        if self._failed is not None or end <= self._position:
            return
        block = memoryview(bytearray(min(end - self._position, _BLOCK)))
        try:
            while self._position < end:
                n = os.preadv(self._fileno, [block[:end - self._position]], self._position)
                if n == 0:
                    self._failed = f"{self.name} (the file is shorter than committed)"
                    return
                self._digest.update(block[:n])
                self._position += n
        except OSError as exc:
            self._failed = f"{self.name} (unreadable: {exc})"

    def update(self, data: memoryview) -> None:
        """Hash the file's next bytes, which the caller has read (and is about to send)."""
        if self._failed is None:
            self._digest.update(data)
            self._position += len(data)

    def mismatch(self) -> str | None:
        """Hash the rest (reading it) and compare: None when the file is what was committed,
        else what did not match."""
        self.read(self._size)
        if self._failed is not None:
            return self._failed
        if self._position != self._size:  # handed more than the committed size
            return self.name
        return None if self._digest.hexdigest() == self._expected else self.name


def free_bytes(directory: Path) -> int:
    """Free space available to this process on the file system holding `directory`."""
    return shutil.disk_usage(directory).free


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either absent/old or complete and durable."""
    try:
        durable.write_atomic(path, data)
    except OSError as exc:
        raise SpoolError(f"cannot write spool file {path}: {exc}") from exc


def remove_temp_files(root: Path) -> list[Path]:
    """Delete temp files left by a crash mid-write; they were never acknowledged."""
    removed = []
    for tmp in sorted(root.glob(f"*/.*{TEMP_SUFFIX}")) + sorted(root.glob(f".*{TEMP_SUFFIX}")):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    for directory in {t.parent for t in removed}:
        fsync_dir(directory)
    return removed


def spooled_files(root: Path) -> list[Path]:
    """Every complete spool file under `root`, relative to it."""
    return sorted(p.relative_to(root) for p in root.glob(f"*/*{FILE_SUFFIX}") if not p.name.startswith("."))


def remove(path: Path) -> None:
    """Delete a spool file for good: unlinked, and its directory fsynced."""
    try:
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
    except OSError as exc:
        raise SpoolError(f"cannot remove spool file {path}: {exc}") from exc
