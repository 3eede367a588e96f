"""Pending calibration sets on disk: never the store's newest until accepted, one per key, and an
accept that would leave the set unused (a newer one in use) is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from gateway.correction import CalibrationSet, CalibrationStore
from gateway.correction.store import PendingCalibrations
from gateway.errors import CalibrationError
from gateway.types import CalibrationKey

KEY = CalibrationKey(detector_serial="SN1", mode="8x8")
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def make(minutes: int) -> CalibrationSet:
    at = T0 + timedelta(minutes=minutes)
    return CalibrationSet(key=KEY, calibration_id=f"SN1-8x8-{at:%Y%m%dT%H%M%S%fZ}-0000000{minutes % 10}",
                          created_at=at, offset=np.full((4, 4), 100, np.float32), gain=np.ones((4, 4), np.float32),
                          defects=np.zeros((4, 4), np.uint8), counts_per_ugy=100.0, temperature_c=30.0,
                          provenance={"operator": "fe"})


def test_pending_is_invisible_until_accepted(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    pending = PendingCalibrations(store)
    store.save(make(0))
    pending.save(make(1), {"passed": True, "checks": []})
    assert store.latest_id(KEY) == make(0).calibration_id
    assert pending.qa(KEY, make(1).calibration_id) == {"passed": True, "checks": []}
    with pytest.raises(CalibrationError, match="not the pending set"):
        pending.accept(KEY, make(0).calibration_id)
    pending.accept(KEY, make(1).calibration_id)
    assert store.latest_id(KEY) == make(1).calibration_id
    assert np.array_equal(store.load(KEY).offset, make(1).offset)  # moved whole, checksums intact
    assert pending.pending_id(KEY) is None and pending.qa(KEY, make(1).calibration_id) is None


def test_one_pending_per_key_and_discard(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    pending = PendingCalibrations(store)
    pending.save(make(1))
    pending.save(make(2))  # replaces the older pending set
    assert pending.pending_id(KEY) == make(2).calibration_id
    assert not (tmp_path / ".pending" / "SN1" / "8x8" / make(1).calibration_id).exists()
    pending.discard(KEY, make(2).calibration_id)
    assert pending.pending_id(KEY) is None and store.latest_id(KEY) is None
    with pytest.raises(CalibrationError):
        pending.discard(KEY, make(2).calibration_id)


def test_accept_refused_when_a_newer_set_is_in_use(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    pending = PendingCalibrations(store)
    pending.save(make(1))
    store.save(make(5))  # e.g. an idle offset refresh of the old set, made after the pending one
    with pytest.raises(CalibrationError, match="newer than the pending"):
        pending.accept(KEY, make(1).calibration_id)
    assert store.latest_id(KEY) == make(5).calibration_id
    assert pending.pending_id(KEY) == make(1).calibration_id
