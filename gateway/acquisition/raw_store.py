"""Raw frames kept from the moment X-rays may have been delivered until their image is saved.

A dose cannot be given back: right after readout, before correction, DICOM building or
spooling can fail, the raw frame is written here durably, together with everything needed
to make its image later (the exposure, and an opaque context from the composition root: the
exam, the identity assigned to the image, the detector). `dxgate reprocess` turns kept frames
into images once the cause of a failure is fixed.

One file per frame, `<id>.dxraw`, written atomically (temp file fsynced, renamed, directory
fsynced), so a crash leaves either no trace or a complete record:

    b"DXRAW1\\n" | header length (4 bytes, big-endian) | header (UTF-8 JSON) | pixels (<u2, row-major)

The header carries the SHA-256 of the pixel bytes; a record that does not match is refused.
Once its image is spooled a record is deleted, or moved to `imaged/` when kept for later
reprocessing. The files hold patient data (the context): owner-only, in the state directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import struct
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from gateway.durable import TEMP_SUFFIX, fsync_dir, makedirs_durable, write_atomic
from gateway.errors import DxgateError
from gateway.types import Exposure, ExposureReadback, FrameKind, FrameMeta, RawFrame, Technique

LOGGER = logging.getLogger(__name__)

MAGIC = b"DXRAW1\n"
SUFFIX = ".dxraw"
IMAGED = "imaged"
FORMAT = 1
_LEN = struct.Struct(">I")
MAX_HEADER = 16 * 1024 * 1024


class RawStoreError(DxgateError):
    """A kept raw frame could not be written, or a record on disk is unreadable or corrupt."""


@dataclass(frozen=True)
class KeptFrame:
    """A raw frame on disk with the exposure and context it was kept with."""

    kept_id: str
    path: Path
    frame: RawFrame
    exposure: Exposure
    context: dict[str, Any]
    kept_at: datetime


@dataclass(frozen=True)
class KeptSummary:
    """What `dxgate reprocess --list` shows of a kept frame, without reading its pixels."""

    kept_id: str
    path: Path
    frame_number: int
    detector_serial: str
    mode: str
    kept_at: str
    reason: str  # why its image is not made yet (last failure), "" if not recorded


class RawStore:
    """Kept raw frames under one directory (owner-only)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.removed_temp_files = self._remove_temp_files()

    def _remove_temp_files(self) -> list[Path]:
        """Half-written records from a crash mid-keep: never acknowledged, so never kept."""
        if not self.directory.is_dir():
            return []
        removed = sorted(self.directory.glob(f".*{SUFFIX}.*{TEMP_SUFFIX}"))
        for tmp in removed:
            tmp.unlink(missing_ok=True)
            LOGGER.warning("removed half-written raw record %s (never acknowledged)", tmp.name)
        if removed:
            fsync_dir(self.directory)
        return removed

    def record_size(self, rows: int, columns: int) -> int:
        """Bytes a kept frame of this geometry takes on disk (for the room check before a dose)."""
        return len(MAGIC) + _LEN.size + 64 * 1024 + rows * columns * 2

    def keep(self, frame: RawFrame, exposure: Exposure, context: dict[str, Any], *, now: datetime) -> str:
        """Write the frame durably; returns its id. Raises RawStoreError (the frame is then
        still in the caller's hands, and must be kept some other way)."""
        kept_id = f"{now:%Y%m%dT%H%M%S}-{frame.meta.detector_serial}-{frame.meta.frame_number}-{uuid.uuid4().hex[:8]}"
        pixels = np.ascontiguousarray(frame.pixels, dtype="<u2").data.cast("B")  # no copy of the frame
        header = {
            "format": FORMAT,
            "kept_id": kept_id,
            "kept_at": now.isoformat(),
            "meta": _meta_to_json(frame.meta),
            "exposure": _exposure_to_json(exposure),
            "context": context,
            "pixels_xxh3_128": xxhash.xxh3_128_hexdigest(pixels),  # corruption check (records before: sha256)
            "reason": "",
        }
        path = self.directory / f"{kept_id}{SUFFIX}"
        try:
            write_atomic(path, _record_chunks(header, pixels))
        except (OSError, TypeError, ValueError) as exc:
            raise RawStoreError(f"cannot keep raw frame {frame.meta.frame_number} in {self.directory}: {exc}") from exc
        LOGGER.info("kept raw frame %d as %s", frame.meta.frame_number, kept_id)
        return kept_id

    def note_failure(self, kept_id: str, reason: str) -> None:
        """Record why this frame's image could not be made (shown by `dxgate reprocess --list`)."""
        path = self._path(kept_id)
        try:
            header, pixels = _split(path.read_bytes(), path)
            header["reason"] = reason
            write_atomic(path, _record_chunks(header, pixels))
        except (OSError, RawStoreError) as exc:  # the frame itself stays kept; only the note is lost
            LOGGER.error("could not note the failure on kept frame %s: %s", kept_id, exc)

    def load(self, kept_id: str) -> KeptFrame:
        path = self._path(kept_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RawStoreError(f"no kept raw frame {kept_id!r} in {self.directory}") from None
        except OSError as exc:
            raise RawStoreError(f"cannot read kept raw frame {path}: {exc}") from exc
        header, pixels = _split(data, path)
        try:
            meta = _meta_from_json(header["meta"])
            if _pixel_digest(header, pixels) != (header.get("pixels_xxh3_128") or header["pixels_sha256"]):
                raise RawStoreError(f"kept raw frame {path}: pixel checksum mismatch (corrupt on disk)")
            if len(pixels) != meta.rows * meta.columns * 2:
                raise RawStoreError(f"kept raw frame {path}: {len(pixels)} pixel bytes for "
                                    f"{meta.rows}x{meta.columns}")
            array = np.frombuffer(pixels, dtype="<u2").reshape(meta.rows, meta.columns).astype(np.uint16)
            return KeptFrame(kept_id=header["kept_id"], path=path, frame=RawFrame(pixels=array, meta=meta),
                             exposure=_exposure_from_json(header["exposure"]), context=header["context"],
                             kept_at=datetime.fromisoformat(header["kept_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RawStoreError(f"kept raw frame {path}: malformed header ({type(exc).__name__}: {exc})") from None

    def count(self) -> int:
        """How many kept frames wait for their image (names only: cheap enough for every scrape)."""
        if not self.directory.is_dir():
            return 0
        return sum(1 for p in self.directory.glob(f"*{SUFFIX}") if not p.name.startswith("."))

    def pending(self) -> list[KeptSummary]:
        """Kept frames whose image is not saved yet, oldest first (unreadable ones included,
        with the reason, so an engineer sees them)."""
        if not self.directory.is_dir():
            return []
        out = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path.name.startswith("."):
                continue
            try:
                header, _ = _split(path.read_bytes(), path)
                meta = header["meta"]
                out.append(KeptSummary(kept_id=header["kept_id"], path=path, frame_number=meta["frame_number"],
                                       detector_serial=meta["detector_serial"], mode=meta["mode"],
                                       kept_at=header["kept_at"], reason=header.get("reason", "")))
            except (OSError, RawStoreError, KeyError, TypeError) as exc:
                out.append(KeptSummary(kept_id=path.name[:-len(SUFFIX)], path=path, frame_number=-1,
                                       detector_serial="?", mode="?", kept_at="?",
                                       reason=f"unreadable: {exc}"))
        return out

    def imaged(self, kept_id: str, *, keep: bool) -> None:
        """The frame's image is saved: delete the record, or move it to imaged/ when `keep`."""
        path = self._path(kept_id)
        if keep:
            makedirs_durable(self.directory / IMAGED)
            os.replace(path, self.directory / IMAGED / path.name)
            fsync_dir(self.directory / IMAGED)
        else:
            path.unlink()
        fsync_dir(self.directory)

    @contextmanager
    def locked(self, kept_id: str) -> Iterator[None]:
        """Hold an exclusive lock on one record (a reprocess in another process must wait)."""
        path = self._path(kept_id)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise RawStoreError(f"no kept raw frame {kept_id!r} in {self.directory}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RawStoreError(f"kept raw frame {kept_id} is being reprocessed by another process") from None
            yield
        finally:
            os.close(fd)

    def _path(self, kept_id: str) -> Path:
        if not kept_id or "/" in kept_id or kept_id.startswith("."):
            raise RawStoreError(f"not a kept frame id: {kept_id!r}")
        return self.directory / f"{kept_id}{SUFFIX}"


def _pixel_digest(header: dict[str, Any], pixels: bytes) -> str:
    """The pixels' digest as the record states it: xxh3_128 (about 20x faster than the sha256 of
    records kept by earlier versions, which stay readable)."""
    if header.get("pixels_xxh3_128"):
        return xxhash.xxh3_128_hexdigest(pixels)
    return hashlib.sha256(pixels).hexdigest()


def _record_chunks(header: dict[str, Any], pixels: bytes | memoryview) -> list[bytes | memoryview]:
    head = json.dumps(header, ensure_ascii=False, allow_nan=False, sort_keys=True).encode("utf-8")
    return [MAGIC + _LEN.pack(len(head)) + head, pixels]


def _split(data: bytes, path: Path) -> tuple[dict[str, Any], bytes]:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LEN.size:
        raise RawStoreError(f"{path} is not a kept raw frame (bad magic)")
    (n,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if n > MAX_HEADER or start + n > len(data):
        raise RawStoreError(f"{path}: header length {n} does not fit the file (truncated?)")
    try:
        header = json.loads(data[start:start + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RawStoreError(f"{path}: header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else "?"
        raise RawStoreError(f"{path}: unknown kept-frame format {found!r} (this dxgate reads {FORMAT})")
    return header, data[start + n:]


def _meta_to_json(m: FrameMeta) -> dict[str, Any]:
    return {"frame_number": m.frame_number, "detector_serial": m.detector_serial, "mode": m.mode,
            "rows": m.rows, "columns": m.columns, "bits_stored": m.bits_stored, "kind": m.kind.value,
            "temperature_c": _finite_or_none(m.temperature_c), "acquired_at": m.acquired_at.isoformat(),
            "crc32": m.crc32, "flags": list(m.flags)}


def _meta_from_json(d: dict[str, Any]) -> FrameMeta:
    return FrameMeta(frame_number=int(d["frame_number"]), detector_serial=str(d["detector_serial"]),
                     mode=str(d["mode"]), rows=int(d["rows"]), columns=int(d["columns"]),
                     bits_stored=int(d["bits_stored"]), kind=FrameKind(d["kind"]),
                     temperature_c=float("nan") if d["temperature_c"] is None else float(d["temperature_c"]),
                     acquired_at=datetime.fromisoformat(d["acquired_at"]), crc32=int(d["crc32"]),
                     flags=tuple(str(f) for f in d["flags"]))


def _exposure_to_json(e: Exposure) -> dict[str, Any]:
    actual = None if e.actual is None else {k: _finite_or_none(getattr(e.actual, k))
                                            for k in ("kvp", "mas", "exposure_time_ms", "dap_dgy_cm2")}
    return {"requested": {"kvp": e.requested.kvp, "mas": e.requested.mas}, "actual": actual,
            "started_at": e.started_at.isoformat(), "problems": list(e.problems)}


def _exposure_from_json(d: dict[str, Any]) -> Exposure:
    a = d["actual"]
    return Exposure(requested=Technique(kvp=float(d["requested"]["kvp"]), mas=float(d["requested"]["mas"])),
                    actual=None if a is None else ExposureReadback(**a),
                    started_at=datetime.fromisoformat(d["started_at"]),
                    problems=tuple(str(p) for p in d["problems"]))


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or x != x or x in (float("inf"), float("-inf")) else float(x)
