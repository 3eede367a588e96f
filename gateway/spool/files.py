"""Spool files on disk: atomic, fsynced writes and the layout that names them.

A file is written to a temp name in its final directory, flushed, fsynced, renamed into
place and the directory fsynced, so a crash at any instant leaves either the old state, a
temp file (removed at the next start) or the complete file — never a half file under its
final name.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

from gateway import durable
from gateway.durable import fsync_dir
from gateway.errors import SpoolError

LOGGER = logging.getLogger(__name__)

TEMP_SUFFIX = durable.TEMP_SUFFIX
FILE_SUFFIX = ".dcm"


def relative_path(sop_instance_uid: str) -> Path:
    """Where an instance lives under the spool root: <2 hex chars of sha256(uid)>/<uid>.dcm.

    The hashed fan-out keeps directories small; the UID as file name keeps them readable.
    """
    bucket = hashlib.sha256(sop_instance_uid.encode("ascii")).hexdigest()[:2]
    return Path(bucket) / f"{sop_instance_uid}{FILE_SUFFIX}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
