"""The guided calibration in the room: instructions before each step, progress, and a flat refused
because the phantom was left in the beam, taken again once the engineer removed it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.app import Gateway
from gateway.config import CalibrationConfig, Config, DestinationConfig, DetectorConfig, GeneratorConfig
from gateway.correction import DefectClass
from gateway.errors import CalibrationError
from hw_sim.room import SimRoom
from tests.peers import free_port

MODE = "8x8"


@pytest.fixture
def room_gateway(tmp_path: Path) -> Iterator[tuple[SimRoom, Gateway]]:
    with SimRoom(seed=21) as room:
        config = Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode=MODE),
                        generator=GeneratorConfig(port=room.start_generator()),
                        calibration=CalibrationConfig(dark_frames=6, flat_frames=3),
                        destinations=(DestinationConfig(name="pacs", port=free_port(), called_ae="PACS"),))
        with Gateway(config, usb_backend=room.usb_backend()) as gw:
            yield room, gw


def test_flat_with_phantom_in_beam_is_taken_again(room_gateway: tuple[SimRoom, Gateway]) -> None:
    room, gw = room_gateway
    said: list[tuple[str, str]] = []
    refused: list[str] = []
    progress: list[tuple[str, int, int]] = []

    def prompt(step: str, text: str) -> None:
        said.append((step, text))
        if step == "flat":
            room.place("chest")  # the engineer forgot the phantom

    def on_bad_frame(step: str, exc: CalibrationError) -> bool:
        refused.append(str(exc))
        room.place("open")  # ... and removes it
        return True

    cal = gw.calibration.calibrate("fe-2", lambda s, d, t: progress.append((s, d, t)), prompt=prompt,
                                   on_bad_frame=on_bad_frame)
    assert [s for s, _ in said] == ["dark", "flat"]
    assert "remove all objects from the beam" in said[1][1] and "70 kV" in said[1][1]
    assert len(refused) == 1 and "object in the beam" in refused[0] and "repeat this flat" in refused[0]
    assert [p for p in progress if p[0] == "flat"] == [("flat", 1, 3), ("flat", 2, 3), ("flat", 3, 3)]
    assert len(room.pulses) == 4  # the refused flat's dose was given too
    assert len(cal.provenance["flat_frames"]) == 3  # type: ignore[arg-type]
    truth = room.model(MODE).truth
    assert np.array_equal(cal.defects == DefectClass.DEAD, truth.dead)  # the phantom left no trace
    assert gw.calibrations.latest_id(gw.calibration_key) == cal.calibration_id


def test_refused_without_retry_stores_nothing(room_gateway: tuple[SimRoom, Gateway]) -> None:
    room, gw = room_gateway
    room.place("chest")
    with pytest.raises(CalibrationError, match="object in the beam"):
        gw.calibration.calibrate("fe-2", on_bad_frame=lambda step, exc: False)
    assert gw.calibrations.latest_id(gw.calibration_key) is None


def test_offset_refresh_after_a_temperature_drift(room_gateway: tuple[SimRoom, Gateway]) -> None:
    """The panel warmed by 4 C (offset +8 counts): idle darks make a new version, same gain and defects."""
    room, gw = room_gateway
    first = gw.calibration.calibrate("fe-2")
    room.set_temperature(room.temperature_c + 4.0)
    model = room.model(MODE)
    refreshed = gw.calibration.refresh_offset()
    good = first.defects == DefectClass.GOOD
    drift = refreshed.offset[good] - first.offset[good]
    assert float(np.median(drift)) == pytest.approx(8.0, abs=0.5)  # 2 counts per C, as the panel drifts
    assert float(np.median(refreshed.offset[good] - model.truth.offset[good])) == pytest.approx(8.0, abs=0.5)
    assert np.array_equal(refreshed.gain, first.gain) and np.array_equal(refreshed.defects, first.defects)
    assert refreshed.provenance["offset_refreshed_from"] == first.calibration_id
    assert gw.calibrations.latest_id(gw.calibration_key) == refreshed.calibration_id
    assert refreshed.calibration_id != first.calibration_id
