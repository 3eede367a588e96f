"""Calibration age and the panel's drift since: warn or block, decided before the tube fires.

The simulator heats its panel (its offset drifts 2 counts per C) and records every pulse it
delivered: a block must leave that record untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import CalibrationConfig, Config, DestinationConfig, DetectorConfig, GeneratorConfig
from gateway.errors import ExposureRefused
from hw_sim.room import SimRoom
from tests.peers import free_port

MODE = "8x8"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def _gateway(tmp_path: Path, room: SimRoom, clock: Clock, **limits: float) -> Gateway:
    config = Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode=MODE),
                    generator=GeneratorConfig(port=room.start_generator()),
                    calibration=CalibrationConfig(dark_frames=4, flat_frames=3, **limits),
                    destinations=(DestinationConfig(name="pacs", port=free_port(), called_ae="PACS"),))
    return Gateway(config, usb_backend=room.usb_backend(), clock=clock)


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=31) as sim:
        yield sim


def test_drift_beyond_the_block_limit_refuses_before_any_xray(tmp_path: Path, room: SimRoom) -> None:
    clock = Clock()
    with _gateway(tmp_path, room, clock, max_temperature_drift_c=3.0) as gw:
        cal = gw.calibrate()
        exam = gw.open_exam(None)
        room.set_temperature(cal.temperature_c + 2.0)  # within the limit: exposed
        gw.expose(exam)
        given = list(room.pulses)
        room.set_temperature(cal.temperature_c + 4.0)
        with pytest.raises(ExposureRefused, match=r"before the tube fired: the panel is at 3[34]\.\d C, \+4\.0 C .*"
                                                  r"limit 3 C.*recalibrate"):
            gw.expose(exam)
        assert room.pulses == given  # the simulator delivered nothing more
        room.set_temperature(cal.temperature_c - 4.0)  # colder counts too
        with pytest.raises(ExposureRefused, match=r"-4\.0 C"):
            gw.expose(exam)
        assert room.pulses == given
        clock.now += timedelta(minutes=5)
        refreshed = gw.calibration.refresh_offset()  # idle darks at today's temperature: allowed again
        assert refreshed.temperature_c == pytest.approx(cal.temperature_c - 4.0, abs=0.05)
        gw.expose(exam)
        assert len(room.pulses) == len(given) + 1


def test_drift_only_warns_by_default(tmp_path: Path, room: SimRoom, caplog: pytest.LogCaptureFixture) -> None:
    with _gateway(tmp_path, room, Clock()) as gw:
        cal = gw.calibrate()
        exam = gw.open_exam(None)
        room.set_temperature(cal.temperature_c + 8.0)
        given = len(room.pulses)
        with caplog.at_level(logging.WARNING, logger="gateway.correction.validity"):
            gw.expose(exam)
        assert len(room.pulses) == given + 1
        assert any("+8.0 C from the" in r.getMessage() and "recalibrate soon" in r.getMessage()
                   for r in caplog.records)


def test_age_warns_then_blocks(tmp_path: Path, room: SimRoom, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    with _gateway(tmp_path, room, clock, warn_age_days=30.0, max_age_days=60.0) as gw:
        gw.calibrate()
        exam = gw.open_exam(None)
        clock.now = START + timedelta(days=29)
        with caplog.at_level(logging.WARNING, logger="gateway.correction.validity"):
            gw.expose(exam)
            assert not caplog.records
            clock.now = START + timedelta(days=31)
            gw.expose(exam)
        assert any("31.0 days old" in r.getMessage() and "plan a recalibration" in r.getMessage()
                   for r in caplog.records)
        given = list(room.pulses)
        clock.now = START + timedelta(days=61)
        with pytest.raises(ExposureRefused, match="61.0 days old, older than the limit of 60 days: recalibrate"):
            gw.expose(exam)
        assert room.pulses == given


def test_a_drift_warning_is_logged_once_while_it_lasts(tmp_path: Path, room: SimRoom,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Armed, the release is re-checked every few seconds: the warning is said when it begins,
    not at every check, and again when it comes back after it ended."""
    with _gateway(tmp_path, room, Clock()) as gw:
        cal = gw.calibrate()
        exam = gw.open_exam(None)

        def drift_lines() -> int:
            return sum(r.name == "gateway.correction.validity" and "may have drifted" in r.getMessage()
                       for r in caplog.records)  # the pre-exposure check (each frame also notes it, once)

        with caplog.at_level(logging.WARNING, logger="gateway.correction.validity"):
            room.set_temperature(cal.temperature_c + 8.0)
            for _ in range(3):
                gw.expose(exam)
            assert drift_lines() == 1
            room.set_temperature(cal.temperature_c + 8.3)  # still drifted: the same warning
            gw.expose(exam)
            assert drift_lines() == 1
            room.set_temperature(cal.temperature_c)
            gw.expose(exam)
            room.set_temperature(cal.temperature_c + 8.0)
            gw.expose(exam)
            assert drift_lines() == 2
