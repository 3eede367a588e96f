"""Idle offset refresh: on schedule, only once the room is idle, never while an exam is open or armed.

The simulated panel warms up by 5 C (its offset +10 counts): the refreshed set's offset must
follow the simulator's true offset at the new temperature, its gain and defects stay, and the
simulator must have delivered no X-rays for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from gateway.app import Gateway
from gateway.config import CalibrationConfig, Config, DestinationConfig, DetectorConfig, GeneratorConfig
from gateway.correction import DefectClass
from gateway.offset_refresh import OffsetRefresh, for_gateway
from gateway.types import Anatomy, Technique
from hw_sim.detector_model import TEMPERATURE_DRIFT
from hw_sim.room import SimRoom
from tests.peers import free_port

MODE = "8x8"
START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def room_gateway(tmp_path: Path) -> Iterator[tuple[SimRoom, Gateway, Clock]]:
    clock = Clock()
    with SimRoom(seed=41) as room:
        config = Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode=MODE),
                        generator=GeneratorConfig(port=room.start_generator()),
                        calibration=CalibrationConfig(dark_frames=6, flat_frames=3, offset_refresh_h=4,
                                                      offset_refresh_idle_min=10),
                        destinations=(DestinationConfig(name="pacs", port=free_port(), called_ae="PACS"),))
        with Gateway(config, usb_backend=room.usb_backend(), clock=clock) as gw:
            yield room, gw, clock


def test_refreshes_on_schedule_once_idle_and_never_during_an_exam(
        room_gateway: tuple[SimRoom, Gateway, Clock]) -> None:
    room, gw, clock = room_gateway
    first = gw.calibrate("fe")
    refresher = for_gateway(gw)
    assert refresher is not None
    pulses = len(room.pulses)
    clock.now = START + timedelta(hours=3)
    assert refresher.tick() is None  # not yet due
    gw.exams.start(None, "tech")  # the room is in use when it falls due
    clock.now = START + timedelta(hours=5)
    assert refresher.tick() is None
    gw.exams.choose_view(Anatomy("CHEST", "PA", None), Technique(kvp=110, mas=2), 400.0)
    gw.exams.arm()
    assert refresher.tick() is None  # armed: never
    gw.exams.finish()
    clock.now += timedelta(minutes=9)
    assert refresher.tick() is None  # idle for 9 minutes only
    room.set_temperature(room.temperature_c + 5.0)
    clock.now += timedelta(minutes=2)
    new = refresher.tick()
    assert new is not None and gw.calibrations.latest_id(gw.calibration_key) == new.calibration_id
    assert len(room.pulses) == pulses  # darks only: no X-rays for it
    good = first.defects == DefectClass.GOOD
    truth = room.model(MODE).truth.offset
    drift = 5.0 * TEMPERATURE_DRIFT
    assert float(np.median(new.offset[good] - truth[good])) == pytest.approx(drift, abs=0.5)  # the true offset now
    assert float(np.median(first.offset[good] - truth[good])) == pytest.approx(0.0, abs=0.5)
    assert np.array_equal(new.gain, first.gain) and np.array_equal(new.defects, first.defects)
    assert new.provenance["gain_calibrated_at"] == first.created_at.isoformat()
    assert gw.corrector().cal.calibration_id == new.calibration_id  # the next exposure uses it
    assert refresher.tick() is None  # the next one is due 4 h after this set
    clock.now += timedelta(hours=4, minutes=1)
    assert refresher.tick() is not None and refresher.refreshed == 2


def test_arming_during_a_refresh_abandons_it(room_gateway: tuple[SimRoom, Gateway, Clock]) -> None:
    room, gw, clock = room_gateway
    first = gw.calibrate("fe")
    looks: list[int] = []
    arm_at = [5]  # the technologist arms after the room's first look and three dark frames

    def busy() -> bool:
        looks.append(1)
        return len(looks) >= arm_at[0]

    refresher = OffsetRefresh(lambda abort: gw.calibration.refresh_offset(abort=abort), busy=busy,
                              last_made=lambda: first.created_at, interval=timedelta(hours=1),
                              idle=timedelta(0), clock=clock)
    clock.now = START + timedelta(hours=2)
    assert refresher.tick() is None and refresher.abandoned == 1
    assert gw.calibrations.latest_id(gw.calibration_key) == first.calibration_id  # the set in use stays
    arm_at[0] = 10**6  # the room is free again
    clock.now += timedelta(minutes=30)
    assert refresher.tick() is None and refresher.refreshed == 0  # retried one interval later, not before
    clock.now += timedelta(minutes=31)
    new = refresher.tick()
    assert new is not None and gw.calibrations.latest_id(gw.calibration_key) == new.calibration_id


def test_age_counts_from_the_gain_not_the_refresh(room_gateway: tuple[SimRoom, Gateway, Clock]) -> None:
    _, gw, clock = room_gateway
    gw.calibrate("fe")
    clock.now = START + timedelta(days=179)
    gw.calibration.refresh_offset()
    clock.now = START + timedelta(days=181)
    with pytest.raises(Exception, match="181.0 days old, older than the limit of 180 days"):
        gw.corrector()
