"""The `socket` pyusb backend: the real panel driver over a Unix socket to the simulator's
server, as `dxgate run` reaches the simulator process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from drivers import registry
from drivers.usb_panel.driver import UsbPanelDetector
from gateway.errors import DeviceError, DeviceNotFound
from gateway.types import FrameKind
from hw_sim.room import SimRoom, kerma_at_detector_ugy
from hw_sim.usb_server import UsbSocketServer

MODE = "4x4"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[SimRoom, UsbSocketServer]]:
    room = SimRoom(seed=21)
    server = UsbSocketServer(room.usb_backend(), tmp_path / "usb.sock")
    try:
        yield room, server
    finally:
        server.close()
        room.close()


BACKENDS: list[object] = []


@pytest.fixture(autouse=True)
def _close_backends() -> Iterator[None]:
    yield
    while BACKENDS:
        BACKENDS.pop().close()  # type: ignore[attr-defined]


def open_over_socket(path: str) -> UsbPanelDetector:
    backend = registry.open_usb_backend("socket", path=path)
    BACKENDS.append(backend)
    det: UsbPanelDetector = registry.open_detector("usb_panel", backend=backend, mode=MODE)
    return det


def test_a_frame_over_the_socket_is_the_panel_s_frame(served: tuple[SimRoom, UsbSocketServer]) -> None:
    room, server = served
    det = open_over_socket(server.path)
    try:
        assert det.info.serial == room.serial
        det.arm(FrameKind.EXPOSED)
        assert det.temperature_c() == pytest.approx(room.temperature_c)
        room_pulse = threading.Timer(0.2, lambda: room.deliver(70.0, 2.0))  # X-rays while the bulk read waits
        room_pulse.start()
        frame = det.read_frame(10.0)
        room_pulse.join()
        truth = room.model(MODE).truth
        sig = (frame.pixels.astype(np.float64) - truth.offset)[~truth.defective].mean()
        assert sig == pytest.approx(room.model(MODE).counts_per_ugy * kerma_at_detector_ugy(70.0, 2.0), rel=0.05)
        assert room.panel.held_frame is None  # acknowledged through the socket
    finally:
        det.close()


def test_a_server_gone_is_an_unplugged_panel(served: tuple[SimRoom, UsbSocketServer], tmp_path: Path) -> None:
    room, server = served
    det = open_over_socket(server.path)
    server.close()
    with pytest.raises(DeviceError, match="No such device"):
        det.temperature_c()
    det.close()
    with pytest.raises(DeviceError, match="unreachable"):
        open_over_socket(str(tmp_path / "nobody.sock"))


def test_no_server_and_no_panel_are_named(tmp_path: Path, served: tuple[SimRoom, UsbSocketServer]) -> None:
    room, server = served
    room.usb_backend().unplug(room.serial)
    with pytest.raises(DeviceNotFound, match="no USB panel"):
        open_over_socket(server.path)
