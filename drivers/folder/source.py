"""Frames that vendor acquisition software drops into a folder, taken in order, whole, once.

A frame is a pair ``<stem>.raw`` + ``<stem>.json`` (drivers/folder/sidecar.py). A file is
complete when it was renamed into place (the safe way to write) or when its size has not
changed for ``stable_s`` (software that writes in place). Names starting with ``.`` or ending in
``.part`` / ``.tmp`` are files still being written and are ignored until renamed.

Order: each stem is numbered when first seen (files already there at start, by name, first),
and only the oldest stem is delivered: a burst comes out in the order it was written. A pair
whose other half does not come within ``pair_timeout_s``, or that does not parse (sidecar, size),
is moved to ``rejected/`` with ``<stem>.reason.txt`` saying why. A delivered pair stays where
it is until the caller ``accept()``s it, after its image is in the spool: then it moves to
``taken/``. Nothing is deleted; a crash before accept() delivers the pair again at the next start.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from drivers.folder.sidecar import Sidecar, acquired_or
from gateway.errors import DeviceError
from gateway.types import ExposureReadback, FrameKind, FrameMeta, RawFrame

LOGGER = logging.getLogger(__name__)

SUFFIXES = (".raw", ".json")
TAKEN, REJECTED = "taken", "rejected"


@dataclass(frozen=True, eq=False)
class DroppedFrame:
    """One frame from the folder, with the exposure data the vendor software recorded."""

    stem: str
    raw: RawFrame
    exposure: ExposureReadback | None
    sidecar: Sidecar


@dataclass
class _File:
    renamed: bool  # moved into place: complete at once
    size: int = -1
    changed_at: float = 0.0  # monotonic time the size was last seen to change


@dataclass
class _Stem:
    seq: int
    first_seen: float
    files: dict[str, _File] = field(default_factory=dict)  # suffix -> state
    delivered: bool = False


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.endswith((".part", ".tmp")) or not name.endswith(SUFFIXES)


class FolderSource:
    """Watches one folder (watchdog; inotify on Linux) and hands out complete frames."""

    def __init__(self, folder: str | Path, *, stable_s: float = 1.0, pair_timeout_s: float = 30.0,
                 detector_serial: str = "", monotonic: Callable[[], float] = time.monotonic) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DeviceError(f"vendor drop folder {self.folder} does not exist")
        for sub in (TAKEN, REJECTED):
            (self.folder / sub).mkdir(exist_ok=True)
        self.stable_s = stable_s
        self.pair_timeout_s = pair_timeout_s
        self._serial = detector_serial
        self._now = monotonic
        self._cond = threading.Condition()
        self._stems: dict[str, _Stem] = {}
        self._seq = 0
        self._closed = False
        self.rejected: list[tuple[str, str]] = []  # (stem, reason)
        self._observer = Observer()
        self._observer.schedule(_Handler(self), str(self.folder), recursive=False)
        self._observer.start()  # before the scan: a file arriving meanwhile is seen by one or both
        self._scan_existing()

    # --- what the caller does --------------------------------------------------------------

    def next_frame(self, timeout_s: float) -> DroppedFrame | None:
        """The oldest complete frame, or None if none is complete within ``timeout_s``."""
        deadline = self._now() + timeout_s
        with self._cond:
            while not self._closed:
                wait = self._next_due()
                if isinstance(wait, str):
                    frame = self._load(wait)
                    if frame is not None:
                        return frame
                    continue
                if wait == 0.0:
                    continue  # something was moved aside: decide again
                left = deadline - self._now()
                if left <= 0:
                    return None
                self._cond.wait(left if wait is None else min(left, max(wait, 0.005)))
        return None

    def accept(self, frame: DroppedFrame) -> None:
        """The frame's image is in the spool: move its pair to taken/ (never deleted here)."""
        with self._cond:
            self._move(frame.stem, TAKEN)
            self._stems.pop(frame.stem, None)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._observer.stop()
        self._observer.join(timeout=5)

    def __enter__(self) -> FolderSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- events (watchdog's thread) ----------------------------------------------------------

    def _seen(self, path: str, renamed: bool) -> None:
        p = Path(path)
        if p.parent != self.folder or _ignored(p.name):
            return
        with self._cond:
            stem = self._stems.get(p.stem)
            if stem is None:
                self._seq += 1
                stem = self._stems[p.stem] = _Stem(self._seq, self._now())
            f = stem.files.get(p.suffix)
            if f is None:
                stem.files[p.suffix] = _File(renamed, changed_at=self._now())
            else:
                f.renamed = f.renamed or renamed
                f.changed_at = self._now()
            self._cond.notify_all()

    def _gone(self, path: str) -> None:
        p = Path(path)
        with self._cond:
            stem = self._stems.get(p.stem)
            if stem is not None and not stem.delivered:
                stem.files.pop(p.suffix, None)
                if not stem.files:
                    del self._stems[p.stem]
            self._cond.notify_all()

    def _scan_existing(self) -> None:
        """Pairs that arrived while the gateway was down: by name, before anything new."""
        now_wall, now = time.time(), self._now()
        with self._cond:
            for p in sorted(self.folder.iterdir()):
                if not p.is_file() or _ignored(p.name):
                    continue
                stem = self._stems.get(p.stem)
                if stem is None:
                    self._seq += 1
                    stem = self._stems[p.stem] = _Stem(self._seq, now)
                age = now_wall - p.stat().st_mtime
                stem.first_seen = min(stem.first_seen, now - max(age, 0.0))
                stem.files.setdefault(p.suffix, _File(False, changed_at=now - max(age, 0.0)))
            found = sorted(self._stems.items(), key=lambda kv: kv[0])  # by name, before anything new
            for i, (_, stem) in enumerate(found, 1):
                stem.seq = i
            self._seq = len(found)
            self._cond.notify_all()

    # --- deciding (lock held) ----------------------------------------------------------------

    def _next_due(self) -> str | float | None:
        """The stem to deliver now, or seconds until the oldest may be complete (None: nothing)."""
        pending = [s for s in self._stems.items() if not s[1].delivered]
        if not pending:
            return None
        name, stem = min(pending, key=lambda kv: kv[1].seq)
        now = self._now()
        waits = []
        for suffix in SUFFIXES:
            f = stem.files.get(suffix)
            if f is None:
                overdue = now - stem.first_seen - self.pair_timeout_s
                if overdue >= 0:
                    missing = "sidecar (.json)" if suffix == ".json" else "raw frame (.raw)"
                    self._reject(name, f"no {missing} within {self.pair_timeout_s:g} s of its other half")
                    return 0.0
                waits.append(-overdue)
                continue
            if f.renamed:
                continue
            try:
                size = (self.folder / (name + suffix)).stat().st_size
            except FileNotFoundError:
                stem.files.pop(suffix, None)
                return 0.0
            if size != f.size:
                if f.size >= 0:  # it grew (or shrank) since the last look: still being written
                    f.changed_at = now
                f.size = size
            still = self.stable_s - (now - f.changed_at)
            if still > 0:
                waits.append(still)
        if waits:
            return min(waits)
        return name

    def _load(self, name: str) -> DroppedFrame | None:
        """Read and check a complete pair; a malformed one is moved aside (None)."""
        try:
            sidecar = Sidecar.model_validate_json((self.folder / f"{name}.json").read_bytes())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first.get("loc", ())) or "document"
            self._reject(name, f"sidecar does not parse: {where}: {first.get('msg', 'invalid')}")
            return None
        except OSError as exc:
            self._reject(name, f"sidecar cannot be read: {exc.strerror or exc}")
            return None
        try:
            data = (self.folder / f"{name}.raw").read_bytes()
        except OSError as exc:
            self._reject(name, f"raw frame cannot be read: {exc.strerror or exc}")
            return None
        if len(data) != sidecar.payload_bytes:
            self._reject(name, f"raw frame is {len(data)} bytes; the sidecar's {sidecar.rows}x{sidecar.columns} "
                               f"uint16 needs {sidecar.payload_bytes}")
            return None
        pixels = np.frombuffer(data, dtype="<u2").reshape(sidecar.rows, sidecar.columns).astype(np.uint16,
                                                                                                    copy=False)
        if sidecar.bits_stored < 16 and int(pixels.max()) >= 1 << sidecar.bits_stored:
            self._reject(name, f"pixel value {int(pixels.max())} exceeds bits_stored {sidecar.bits_stored}")
            return None
        meta = FrameMeta(frame_number=sidecar.frame_number, detector_serial=sidecar.detector_serial or self._serial,
                         mode=f"{sidecar.rows}x{sidecar.columns}", rows=sidecar.rows, columns=sidecar.columns,
                         bits_stored=sidecar.bits_stored,
                         kind=FrameKind.DARK if sidecar.kind == "dark" else FrameKind.EXPOSED,
                         temperature_c=math.nan if sidecar.temperature_c is None else sidecar.temperature_c,
                         acquired_at=acquired_or(sidecar, datetime.now(UTC)), crc32=0,
                         flags=("taken from a vendor drop folder",))
        e = sidecar.exposure
        exposure = None if e is None else ExposureReadback(kvp=e.kvp, mas=e.mas, exposure_time_ms=e.exposure_time_ms,
                                                          dap_dgy_cm2=e.dap_dgy_cm2, tube_current_ma=e.tube_current_ma)
        self._stems[name].delivered = True
        LOGGER.info("folder %s: frame %s taken", self.folder, name)
        return DroppedFrame(stem=name, raw=RawFrame(pixels=pixels, meta=meta), exposure=exposure, sidecar=sidecar)

    def _reject(self, name: str, reason: str) -> None:
        LOGGER.warning("folder %s: %s moved aside: %s", self.folder, name, reason)
        self._move(name, REJECTED)
        (self.folder / REJECTED / f"{name}.reason.txt").write_text(reason + "\n", encoding="utf-8")
        self._stems.pop(name, None)
        self.rejected.append((name, reason))

    def _move(self, name: str, sub: str) -> None:
        for suffix in SUFFIXES:
            src = self.folder / f"{name}{suffix}"
            if src.exists():
                os.replace(src, self.folder / sub / src.name)


class _Handler(FileSystemEventHandler):
    def __init__(self, source: FolderSource) -> None:
        self._source = source

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._source._seen(str(event.src_path), renamed=False)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._source._seen(str(event.src_path), renamed=False)

    def on_moved(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._source._gone(str(event.src_path))
            self._source._seen(str(event.dest_path), renamed=True)

    def on_deleted(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._source._gone(str(event.src_path))
