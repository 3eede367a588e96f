"""Helpers for the phantom and collimation tests: a room served over the `socket` pyusb backend,
exposed and read through the real panel driver, and the frame turned back into transmission."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from drivers import registry
from drivers.usb_panel.driver import UsbPanelDetector
from gateway.types import FrameKind
from hw_sim.control import ControlServer, SimControl
from hw_sim.room import SimRoom, kerma_at_detector_ugy
from hw_sim.usb_server import UsbSocketServer

MODE = "2x2"
KVP, MAS = 80.0, 5.0  # about 33 uGy at the panel: 13000 counts open, far from saturation


class Bench:
    """A room, its USB socket server, its control socket, and the driver on the socket backend."""

    def __init__(self, room: SimRoom, ctl: SimControl, det: UsbPanelDetector) -> None:
        self.room, self.ctl, self.det = room, ctl, det

    def expose(self) -> np.ndarray:
        """Arm, deliver an X-ray pulse (the generator's EXPOSE), read the frame through the driver."""
        self.det.arm(FrameKind.EXPOSED)
        self.room.deliver(KVP, MAS)
        frame = self.det.read_frame(30.0)
        assert frame.meta.mode == MODE and not frame.meta.flags
        return frame.pixels

    def transmission(self, raw: np.ndarray) -> np.ndarray:
        """The frame as transmission: offset and gain taken out with the simulator's truth
        (defective pixels NaN), divided by the open-field signal of the delivered kerma."""
        model = self.room.model(MODE)
        truth = model.truth
        kvp, mas, kerma = self.room.pulses[-1]
        assert kerma == kerma_at_detector_ugy(kvp, mas)
        per_ugy = model.counts_per_ugy * truth.gain.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (raw.astype(np.float64) - truth.offset) / (per_ugy * kerma)
        t[truth.defective] = np.nan
        return t


@contextmanager
def bench(tmp_path: Path, seed: int = 3) -> Iterator[Bench]:
    room = SimRoom(seed, modes=(MODE,))
    room.start_generator()
    usb = UsbSocketServer(room.usb_backend(), tmp_path / "usb.sock")
    control = ControlServer(room, tmp_path / "control.sock")
    ctl = SimControl(control.path)
    backend = registry.open_usb_backend("socket", path=usb.path)
    det: UsbPanelDetector = registry.open_detector("usb_panel", backend=backend, mode=MODE)
    try:
        yield Bench(room, ctl, det)
    finally:
        det.close()
        backend.close()  # type: ignore[attr-defined]
        ctl.close()
        control.close()
        usb.close()
        room.close()
