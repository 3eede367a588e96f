"""Versioned, checksummed calibration sets on disk, one directory per set.

Layout: <directory>/<serial>/<mode>/<calibration_id>/{offset,gain,defects}.npy + manifest.json.
A set is written into a hidden temporary directory (every file fsynced), which is then
renamed into place and its parent fsynced: a crash leaves either no set or a complete one.
Sets are never overwritten. The manifest records the SHA-256 of every array file and a
SHA-256 of its own canonical content, so any flipped byte is refused on load.

Format 1: offset, gain and defect maps. Format 2 adds a multi-point gain (response.npy and
the manifest's response_targets); it is written only for a set that has one, so every
single-point set stays format 1, readable by a dxgate that knows format 1 only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gateway.correction.calibration_set import CalibrationInfo, CalibrationSet
from gateway.durable import fsync_dir, makedirs_durable, write_new_file
from gateway.errors import CalibrationError
from gateway.types import CalibrationKey

LOGGER = logging.getLogger(__name__)

FORMAT = 2  # the newest format this dxgate reads and writes
SINGLE_POINT_FORMAT = 1
MANIFEST = "manifest.json"
ARRAYS = ("offset", "gain", "defects")
RESPONSE = "response"  # format 2: the multi-point gain's knots
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ID_TAIL = re.compile(r"^\d{8}T\d{12}Z$")


class CalibrationStore:
    """Calibration sets kept per detector serial and readout mode under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def save(self, cal: CalibrationSet) -> Path:
        """Write the set durably into a new directory and return it; never overwrites."""
        parent = self._key_dir(cal.key)
        _safe_name("calibration id", cal.calibration_id)
        final = parent / cal.calibration_id
        if final.exists():
            raise CalibrationError(f"calibration {cal.calibration_id} is already saved at {final}; sets are never "
                                   "overwritten")
        makedirs_durable(parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{cal.calibration_id}-", dir=parent))
        done = False
        try:
            os.chmod(tmp, 0o755)
            files: dict[str, dict[str, Any]] = {}
            names = ARRAYS if cal.response is None else (*ARRAYS, RESPONSE)
            for name in names:
                arr = getattr(cal, name)
                buf = io.BytesIO()
                np.save(buf, arr, allow_pickle=False)
                data = buf.getvalue()
                write_new_file(tmp / f"{name}.npy", data)
                files[f"{name}.npy"] = {"sha256": hashlib.sha256(data).hexdigest(), "dtype": str(arr.dtype),
                                        "shape": list(arr.shape)}
            write_new_file(tmp / MANIFEST, _manifest_bytes(_manifest_body(cal, files)))
            fsync_dir(tmp)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                raise CalibrationError(f"cannot move calibration {cal.calibration_id} into {final}: {exc}") from exc
            done = True
        finally:
            if not done:
                shutil.rmtree(tmp, ignore_errors=True)
        fsync_dir(parent)
        LOGGER.info("saved calibration %s at %s", cal.calibration_id, final)
        return final

    def latest_id(self, key: CalibrationKey) -> str | None:
        """The id of the newest set for this serial and mode, from the directory names alone
        (cheap enough to ask at every exposure); None if there is none."""
        newest = self._newest_dir(key)
        return None if newest is None else newest.name

    def latest(self, key: CalibrationKey) -> CalibrationSet | None:
        """The newest set for this serial and mode, verified; None if there is none.

        A newest set that fails verification raises CalibrationError: an older set is never
        silently used in its place.
        """
        newest = self._newest_dir(key)
        return None if newest is None else _read(newest, key)

    def _newest_dir(self, key: CalibrationKey) -> Path | None:
        parent = self._key_dir(key)
        if not parent.is_dir():
            return None
        ids = []
        for p in parent.iterdir():
            if p.name.startswith(".") or not p.is_dir():
                continue
            parts = p.name.rsplit("-", 2)
            if len(parts) != 3 or not _ID_TAIL.match(parts[1]):
                LOGGER.warning("ignoring %s: not a calibration set directory", p)
                continue
            ids.append(((parts[1], parts[2]), p))
        if not ids:
            return None
        return max(ids)[1]

    def load(self, key: CalibrationKey, *, max_age_days: float | None = None,
             now: datetime | None = None) -> CalibrationSet:
        """The newest set for this serial and mode; CalibrationError if none, corrupt, or too old."""
        cal = self.latest(key)
        if cal is None:
            raise CalibrationError(f"no calibration for detector {key.detector_serial} mode {key.mode} in "
                                   f"{self._key_dir(key)}: calibrate the detector first (`dxgate calibrate`, "
                                   "or Calibration in the engineer's console)")
        if max_age_days is not None:
            check_age(cal, max_age_days=max_age_days, now=now)
        return cal

    def _key_dir(self, key: CalibrationKey) -> Path:
        return self.directory / _safe_name("detector serial", key.detector_serial) / _safe_name("mode", key.mode)


def check_age(cal: CalibrationSet | CalibrationInfo, *, max_age_days: float, now: datetime | None = None) -> None:
    """CalibrationError if the set is older than `max_age_days` at `now` (default: the real time).

    The age of a set whose offset was refreshed counts from its gain calibration: idle darks
    renew the offset, never the gain or the defect map."""
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None or now.utcoffset() is None:
        raise CalibrationError(f"current time {now} has no time zone")
    age_days = (now - calibrated_at(cal)).total_seconds() / 86400.0
    key = cal.key
    if age_days > max_age_days:
        raise CalibrationError(
            f"calibration {cal.calibration_id} for detector {key.detector_serial} mode {key.mode} is "
            f"{age_days:.1f} days old, older than the limit of {max_age_days:g} days: recalibrate")
    if age_days < -1:
        LOGGER.warning("calibration %s is dated %.1f days in the future: check the clock",
                       cal.calibration_id, -age_days)


def calibrated_at(cal: CalibrationSet | CalibrationInfo) -> datetime:
    """When the set's gain and defects were calibrated (its own date unless its offset was refreshed)."""
    gain_at = cal.provenance.get("gain_calibrated_at")
    if isinstance(gain_at, str):
        try:
            parsed = datetime.fromisoformat(gain_at)
        except ValueError:
            return cal.created_at
        if parsed.tzinfo is not None:
            return parsed
    return cal.created_at


def _safe_name(what: str, name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise CalibrationError(f"{what} {name!r} cannot name a directory (letters, digits, '.', '_', '-' only)")
    return name


def _manifest_body(cal: CalibrationSet, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    multi = {} if cal.response is None else {"response_targets": list(cal.response_targets)}
    return {
        **multi,
        "format": SINGLE_POINT_FORMAT if cal.response is None else FORMAT,
        "calibration_id": cal.calibration_id,
        "key": {"detector_serial": cal.key.detector_serial, "mode": cal.key.mode},
        "created_at": cal.created_at.isoformat(),
        "temperature_c": cal.temperature_c,
        "counts_per_ugy": cal.counts_per_ugy,
        "shape": list(cal.shape),
        "provenance": dict(cal.provenance),
        "files": files,
    }


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _manifest_bytes(body: dict[str, Any]) -> bytes:
    try:
        digest = hashlib.sha256(_canonical(body)).hexdigest()
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"calibration {body['calibration_id']}: manifest not JSON-serialisable "
                               f"(provenance?): {exc}") from exc
    return json.dumps({**body, "manifest_sha256": digest}, sort_keys=True, indent=2).encode() + b"\n"


def _read(path: Path, key: CalibrationKey) -> CalibrationSet:
    manifest_path = path / MANIFEST
    try:
        doc = json.loads(manifest_path.read_bytes())
    except FileNotFoundError:
        raise CalibrationError(f"calibration {path} has no {MANIFEST}: incomplete or not a calibration set") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"corrupt calibration manifest {manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CalibrationError(f"corrupt calibration manifest {manifest_path}: not a JSON object")
    stated = doc.pop("manifest_sha256", None)
    if stated != hashlib.sha256(_canonical(doc)).hexdigest():
        raise CalibrationError(f"checksum mismatch in {manifest_path}: the manifest is corrupt or was edited")
    try:
        return _from_manifest(doc, path, manifest_path, key)
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"calibration manifest {manifest_path} is malformed: {exc!r}") from None


def _from_manifest(doc: dict[str, Any], path: Path, manifest_path: Path, key: CalibrationKey) -> CalibrationSet:
    fmt = doc["format"]
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise CalibrationError(f"{manifest_path}: format {fmt!r} is not a format version")
    if fmt > FORMAT:
        raise CalibrationError(f"{manifest_path}: written by a newer dxgate (format {fmt}, this one reads format "
                               f"{FORMAT}): upgrade dxgate or calibrate again")
    if fmt < SINGLE_POINT_FORMAT:
        raise CalibrationError(f"{manifest_path}: manifest format {fmt}, this dxgate reads {SINGLE_POINT_FORMAT} to "
                               f"{FORMAT}")
    stored = CalibrationKey(detector_serial=doc["key"]["detector_serial"], mode=doc["key"]["mode"])
    if stored != key:
        raise CalibrationError(
            f"{manifest_path} is a calibration for detector {stored.detector_serial} mode {stored.mode}, not for "
            f"detector {key.detector_serial} mode {key.mode}: refused")
    if doc["calibration_id"] != path.name:
        raise CalibrationError(f"{manifest_path} names calibration {doc['calibration_id']}, but lies in {path.name}")
    shape = tuple(doc["shape"])
    arrays: dict[str, np.ndarray] = {}
    multi = fmt >= 2 and f"{RESPONSE}.npy" in doc["files"]
    for name in (*ARRAYS, RESPONSE) if multi else ARRAYS:
        file = path / f"{name}.npy"
        entry = doc["files"][file.name]
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise CalibrationError(f"calibration file {file} is missing") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CalibrationError(f"checksum mismatch in {file}: the calibration file is corrupt")
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        want = (*entry["shape"][:1], *shape) if name == RESPONSE else shape
        if arr.shape[-2:] != shape or arr.shape != want or tuple(entry["shape"]) != arr.shape \
                or str(arr.dtype) != entry["dtype"]:
            raise CalibrationError(
                f"shape mismatch in {file}: {arr.dtype}{arr.shape}, manifest says {entry['dtype']}"
                f"{tuple(entry['shape'])} for a {shape[0]}x{shape[1]} calibration")
        arrays[name] = arr
    created_at = datetime.fromisoformat(doc["created_at"])
    return CalibrationSet(
        key=stored,
        calibration_id=doc["calibration_id"],
        created_at=created_at,
        offset=arrays["offset"],
        gain=arrays["gain"],
        defects=arrays["defects"],
        counts_per_ugy=float(doc["counts_per_ugy"]),
        temperature_c=float(doc["temperature_c"]),
        provenance=doc["provenance"],
        response=arrays.get(RESPONSE),
        response_targets=tuple(float(t) for t in doc["response_targets"]) if multi else (),
    )


PENDING = ".pending"  # hidden: the store's own scan of a key directory never sees it
QA_SUFFIX = ".qa.json"


class PendingCalibrations:
    """A new calibration set the engineer has not yet accepted: kept durably under
    <directory>/.pending/<serial>/<mode>/<calibration_id>/ (with its QA figures beside it in
    <calibration_id>.qa.json), never used for an image. At most one per serial and mode; it
    survives a restart. `accept` moves it into place (the newest set: the next exposure uses
    it); `discard` deletes it."""

    def __init__(self, store: CalibrationStore) -> None:
        self._store = store
        self._pending = CalibrationStore(store.directory / PENDING)

    def save(self, cal: CalibrationSet, qa: dict[str, Any] | None = None) -> Path:
        """Keep `cal` pending (any earlier pending set of its key is discarded, with a log line)."""
        old = self._pending.latest_id(cal.key)
        if old is not None:
            LOGGER.warning("pending calibration %s replaced by the new one %s", old, cal.calibration_id)
            self.discard(cal.key, old)
        path = self._pending.save(cal)
        if qa is not None:
            qa_path = path.parent / f"{cal.calibration_id}{QA_SUFFIX}"
            write_new_file(qa_path, json.dumps(qa, sort_keys=True, allow_nan=False).encode(), mode=0o644)
            fsync_dir(path.parent)
        return path

    def pending_id(self, key: CalibrationKey) -> str | None:
        return self._pending.latest_id(key)

    def get(self, key: CalibrationKey) -> CalibrationSet | None:
        """The pending set, verified; None if there is none."""
        return self._pending.latest(key)

    def qa(self, key: CalibrationKey, calibration_id: str) -> dict[str, Any] | None:
        """The QA figures kept with the pending set (None if it has none or is not pending)."""
        path = self._pending._key_dir(key) / f"{_safe_name('calibration id', calibration_id)}{QA_SUFFIX}"
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            LOGGER.warning("QA figures of pending calibration %s unreadable: %s", calibration_id, exc)
            return None
        return doc if isinstance(doc, dict) else None

    def accept(self, key: CalibrationKey, calibration_id: str) -> CalibrationSet:
        """Make the pending set `calibration_id` the set in use. Refused (CalibrationError) when
        it is not the pending one, fails verification, or is not newer than the set in use (an
        offset refresh made a newer version meanwhile: it would never be used)."""
        cal = self._named(key, calibration_id)
        active = self._store.latest_id(key)
        if active is not None and _order(active) >= _order(calibration_id):
            raise CalibrationError(f"calibration {active} in use is newer than the pending {calibration_id}: "
                                   "it would never be used; discard it and calibrate again")
        src = self._pending._key_dir(key) / calibration_id
        parent = self._store._key_dir(key)
        makedirs_durable(parent)
        try:
            os.rename(src, parent / calibration_id)
        except OSError as exc:
            raise CalibrationError(f"cannot move calibration {calibration_id} into {parent}: {exc}") from exc
        fsync_dir(parent)
        fsync_dir(src.parent)
        (src.parent / f"{calibration_id}{QA_SUFFIX}").unlink(missing_ok=True)
        LOGGER.info("pending calibration %s accepted: in use", calibration_id)
        return cal

    def discard(self, key: CalibrationKey, calibration_id: str) -> None:
        """Delete the pending set `calibration_id` (CalibrationError if it is not pending)."""
        _safe_name("calibration id", calibration_id)
        parent = self._pending._key_dir(key)
        src = parent / calibration_id
        if self._pending.latest_id(key) != calibration_id or not src.is_dir():
            raise CalibrationError(f"calibration {calibration_id} is not the pending set")
        gone = parent / f".discard-{calibration_id}"
        os.rename(src, gone)  # one step: a crash never leaves half a pending set looking whole
        fsync_dir(parent)
        shutil.rmtree(gone, ignore_errors=True)
        (parent / f"{calibration_id}{QA_SUFFIX}").unlink(missing_ok=True)
        fsync_dir(parent)
        LOGGER.info("pending calibration %s discarded", calibration_id)

    def _named(self, key: CalibrationKey, calibration_id: str) -> CalibrationSet:
        cal = self._pending.latest(key)
        if cal is None or cal.calibration_id != calibration_id:
            raise CalibrationError(f"calibration {calibration_id} is not the pending set"
                                   + (f" (pending: {cal.calibration_id})" if cal is not None else " (none pending)"))
        return cal


def _order(calibration_id: str) -> tuple[str, ...]:
    """Sort key of a set directory name, as CalibrationStore picks the newest."""
    parts = calibration_id.rsplit("-", 2)
    return (parts[1], parts[2]) if len(parts) == 3 else (calibration_id,)
