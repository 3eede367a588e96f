"""A simulated room with the real drivers in front of it (small modes keep the tests fast)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drivers.serial_generator.driver import SerialGenerator, open_generator
from drivers.usb_panel.driver import UsbPanelDetector, open_detector
from hw_sim.room import SimRoom

TEST_MODES = ("8x8", "4x4")


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=7, modes=TEST_MODES) as r:
        yield r


@pytest.fixture
def detector(room: SimRoom) -> Iterator[UsbPanelDetector]:
    det = open_detector(backend=room.usb_backend(), mode="8x8")
    try:
        yield det
    finally:
        det.close()


@pytest.fixture
def generator(room: SimRoom) -> Iterator[SerialGenerator]:
    gen = open_generator(port=room.start_generator(), timeout_s=3.0)
    try:
        yield gen
    finally:
        gen.close()
