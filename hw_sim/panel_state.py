"""The simulated panel's state under one lock, its presence on the bus, and the checks all requests make."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from hw_sim import usb_wire as w
from hw_sim.collimation import Field
from hw_sim.detector_model import MODES, DetectorModel

LOGGER = logging.getLogger(__name__)


class Stall(Exception):
    """The panel refused a control request (the host sees a STALL / pipe error)."""


class Unplugged(Exception):
    """The panel is gone (closed / unplugged)."""


@dataclass
class PanelFaults:
    """Counters of faults still to inject; each transmission or readout consumes one."""

    corrupt_crc: int = 0  # next N transmissions carry a payload that fails its CRC
    truncate: int = 0  # next N transmissions end early
    truncate_keep: float = 0.5  # fraction of the payload a truncated transmission carries
    skip_frame_number: int = 0  # next N readouts skip one frame number
    mangle_header: int = 0  # next N transmissions carry a header with one byte changed
    mangle_offset: int = 0
    mangle_xor: int = 0x01
    timestamp_us: int | None = None  # device clock stamped on frames; None: the real clock
    stall_payload: int = 0  # next N transmissions send the header, never the payload (host times out)
    halt_bulk: int = 0  # next N transmissions halt bulk-IN after the header (STALL until CLEAR_HALT)
    unplug_mid_transfer: int = 0  # next N transmissions: the cable is pulled after the header
    replug_after_s: float | None = None  # ...and plugged in again this long after (None: stays out)
    hung: bool = False  # firmware stopped answering: every request times out
    unplug_at_ack: str = ""  # "before": the cable goes before the next ACK arrives; "after": after it acted


@dataclass(frozen=True)
class Held:
    """A frame read out and held for the host until it is acknowledged."""

    number: int
    header: bytes
    payload: bytes | memoryview


@dataclass
class SequenceRun:
    """A sequence the panel is reading out on its own clock; `stop` ends it early."""

    remaining: int
    period_s: float
    kind: int
    stop: bool = False


class PanelState:
    """What the panel firmware holds; every method runs with `_cond` held unless it takes it."""

    def __init__(self, *, serial: str, modes: Sequence[str], model_for: Callable[[str], DetectorModel],
                 vendor: str = "dxgate", model: str = "SimPanel 4343", firmware: str = "2.1.0",
                 temperature_c: Callable[[], float] = lambda: 30.0, max_temperature_c: float = 45.0,
                 wireless: bool = False, aed_threshold_ugy: float = 0.5, frame_cache: int = 0) -> None:
        unknown = [m for m in modes if m not in MODES]
        if unknown or not modes:
            raise ValueError(f"panel modes {list(modes)!r} invalid; known modes: {', '.join(MODES)}")
        self.serial, self.vendor, self.model_name, self.firmware = serial, vendor, model, firmware
        self.modes = tuple(modes)
        self._model_for = model_for
        self._temperature_c = temperature_c
        self.max_temperature_c = max_temperature_c
        self.wireless = wireless
        self.battery_percent = 87 if wireless else None
        self.link_quality_percent = 92 if wireless else None
        self.aed_threshold_ugy = aed_threshold_ugy
        self.fluoro_kerma_ugy = 0.05  # per frame of an exposed sequence (a fluoroscopy-style dose rate)
        self.faults = PanelFaults()
        # Benchmarks: cycle through this many synthesised frames per (mode, kerma, scene) instead of
        # synthesising each (0: every frame is new, as the physics tests need).
        self.frame_cache = frame_cache
        self._cache: dict[tuple[str, float, str, Field | None], list[tuple[bytes, int]]] = {}
        self._cache_next = 0
        self._cond = threading.Condition()
        self._mode = self.modes[0]
        self._armed: int | None = None
        self._pulse: tuple[float, str, Field | None] | None = None
        self._window_end: float | None = None  # software trigger: integration window running until
        self._held: deque[Held] = deque()
        self._sequence: SequenceRun | None = None
        self._tx: deque[memoryview] = deque()
        self._last_frame = 0
        self._last_error = w.E_NONE
        self._closed = False
        self._present = True
        self._halted = False
        self.plug_generation = 0  # counts re-plugs: a handle from before one is dead
        self.frames_read_out = 0
        self.transmissions = 0
        self.pulses_lost = 0
        self.exp_requests = 0
        self.held_back = threading.Event()  # set when a sequence readout waited for the host's ACKs

    # --- presence on the bus -----------------------------------------------------------------

    @property
    def present(self) -> bool:
        with self._cond:
            return self._present and not self._closed

    def unplug(self) -> None:
        """The cable is pulled: the transfer in progress is lost, held frames are kept."""
        with self._cond:
            if not self._present:
                return
            self._present = False
            self._tx.clear()
            self._cond.notify_all()
        LOGGER.info("panel %s unplugged", self.serial)

    def plug(self) -> None:
        """The cable is back: the panel enumerates anew (a new address; old handles are dead)."""
        with self._cond:
            if self._present:
                return
            self._present = True
            self._halted = False
            self.plug_generation += 1
            self._cond.notify_all()
        LOGGER.info("panel %s plugged in", self.serial)

    def wait_present(self, present: bool, timeout_s: float) -> bool:
        """Block until the panel is (or is not) on the bus; whether it happened in time."""
        with self._cond:
            return self._cond.wait_for(lambda: self._present == present, timeout_s)

    def _pull_cable(self) -> None:
        """A fault pulls the cable now (lock held); plugged back after replug_after_s if set."""
        self.faults.unplug_at_ack = ""
        self._present = False
        self._tx.clear()
        self._cond.notify_all()
        LOGGER.info("panel %s unplugged in the middle of a transfer", self.serial)
        if self.faults.replug_after_s is not None:
            threading.Timer(self.faults.replug_after_s, self.plug).start()

    # --- checks and helpers (called with the lock held) ------------------------------------

    def _over_temperature(self) -> bool:
        return self._temperature_c() > self.max_temperature_c

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _stall(self, code: int, why: str) -> NoReturn:
        self._last_error = code
        LOGGER.info("panel %s: STALL: %s", self.serial, why)
        raise Stall(why)

    def _check_open(self) -> None:
        if self._closed or not self._present:
            raise Unplugged(f"panel {self.serial} is gone")

    def _check_answering(self, timeout_s: float | None) -> None:
        """A hung panel lets the request time out (as libusb reports a control timeout)."""
        self._check_open()
        if self.faults.hung:
            self._cond.wait_for(lambda: not self.faults.hung or self._closed or not self._present,
                                timeout_s if timeout_s is not None else 5.0)
            self._check_open()
            if self.faults.hung:
                raise TimeoutError(f"panel {self.serial}: control request timed out")

