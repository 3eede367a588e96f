"""The room over the real drivers: the simulated panel behind the pyusb backend, the generator on a pty."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drivers.serial_generator.driver import SerialGenerator, open_generator
from drivers.usb_panel.driver import UsbPanelDetector, open_detector
from hw_sim.room import SimRoom

MODE = "8x8"

Rig = tuple[SimRoom, UsbPanelDetector, SerialGenerator]


@pytest.fixture
def rig() -> Iterator[Rig]:
    room = SimRoom(seed=5)
    detector = open_detector(mode=MODE, backend=room.usb_backend())
    generator = open_generator(port=room.start_generator(), timeout_s=5.0)
    try:
        yield room, detector, generator
    finally:
        generator.close()
        detector.close()
        room.close()
