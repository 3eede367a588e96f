"""The simulated flat panel's firmware: control requests, frame readout and transmission.

Knows nothing of pyusb: hw_sim/usb_backend.py puts it on a (simulated) bus. Frames come
from a DetectorModel; an exposed frame reads out only once an X-ray pulse arrived while
armed. Fault injection corrupts what goes over the wire, never the frame the panel holds,
so a RESEND can cure a transmission error as on real hardware.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from hw_sim import usb_wire as w
from hw_sim.detector_model import BITS_STORED, MODES, DetectorModel

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


@dataclass(frozen=True)
class _Held:
    number: int
    header: bytes
    payload: bytes


class SimPanel:
    """One simulated panel. Thread-safe: the host thread and the generator thread both call in."""

    def __init__(self, *, serial: str, modes: Sequence[str], model_for: Callable[[str], DetectorModel],
                 vendor: str = "dxgate", model: str = "SimPanel 4343", firmware: str = "1.0.0",
                 temperature_c: Callable[[], float] = lambda: 30.0) -> None:
        unknown = [m for m in modes if m not in MODES]
        if unknown or not modes:
            raise ValueError(f"panel modes {list(modes)!r} invalid; known modes: {', '.join(MODES)}")
        self.serial, self.vendor, self.model_name, self.firmware = serial, vendor, model, firmware
        self.modes = tuple(modes)
        self._model_for = model_for
        self._temperature_c = temperature_c
        self.faults = PanelFaults()
        self._cond = threading.Condition()
        self._mode = self.modes[0]
        self._armed: int | None = None
        self._pulse: tuple[float, str] | None = None
        self._held: _Held | None = None
        self._tx: deque[memoryview] = deque()
        self._last_frame = 0
        self._last_error = w.E_NONE
        self._closed = False
        self.frames_read_out = 0
        self.transmissions = 0
        self.pulses_lost = 0

    # --- fault injection (tests) -----------------------------------------------------------

    # Each call sets (not adds to) the count of faults still to come; 0 cancels.

    def corrupt_crc(self, n: int = 1) -> None:
        with self._cond:
            self.faults.corrupt_crc = n

    def truncate_next(self, n: int = 1, keep: float = 0.5) -> None:
        with self._cond:
            self.faults.truncate = n
            self.faults.truncate_keep = keep

    def mangle_header(self, offset: int, xor: int = 0x01, n: int = 1) -> None:
        """The next N transmissions carry a header whose byte at `offset` is XORed with `xor`."""
        if not 0 <= offset < w.HEADER_SIZE or not 0 < xor < 256:
            raise ValueError(f"header offset {offset} / xor {xor:#x} out of range")
        with self._cond:
            self.faults.mangle_header, self.faults.mangle_offset, self.faults.mangle_xor = n, offset, xor

    def skip_frame_number(self, n: int = 1) -> None:
        with self._cond:
            self.faults.skip_frame_number = n

    def set_timestamp_us(self, value: int | None) -> None:
        """Stamp every frame from now on with this device time (None: the real clock)."""
        with self._cond:
            self.faults.timestamp_us = value

    # --- what the room does to the panel ---------------------------------------------------

    def xray_pulse(self, kerma_ugy: float, scene: str) -> bool:
        """X-rays reached the panel. Returns whether it was integrating (else the dose is lost)."""
        with self._cond:
            if self._armed != w.KIND_EXPOSED or self._pulse is not None:
                self.pulses_lost += 1
                LOGGER.warning("panel %s: X-ray pulse of %.2f uGy while not armed for exposure: lost",
                               self.serial, kerma_ugy)
                return False
            self._pulse = (kerma_ugy, scene)
            self._cond.notify_all()
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def held_frame(self) -> int | None:
        """Number of the frame held for the host (not yet ACKed), if any."""
        with self._cond:
            return self._held.number if self._held else None

    # --- control endpoint ------------------------------------------------------------------

    def control_in(self, request: int, value: int, length: int) -> bytes:
        with self._cond:
            self._check_open()
            if request == w.IDENTIFY:
                data = w.identify_record(
                    vendor=self.vendor, model=self.model_name, serial=self.serial, firmware=self.firmware,
                    modes=[(MODES[m][0], m, MODES[m][1], MODES[m][1], MODES[m][2], BITS_STORED)
                           for m in self.modes])
                self._last_error = w.E_NONE
            elif request == w.STATUS:
                state = w.HOLDING if self._held else (w.ARMED if self._armed is not None else w.IDLE)
                data = w.status_record(state=state, last_error=self._last_error,
                                       mode_id=MODES[self._mode][0], last_frame=self._last_frame,
                                       temperature_c=self._temperature_c())
            else:
                self._stall(w.E_BAD_REQUEST, f"unknown IN request 0x{request:02x}")
            return data[:length]

    def control_out(self, request: int, value: int) -> None:
        with self._cond:
            self._check_open()
            if request == w.SET_MODE:
                if self._armed is not None or self._held is not None:
                    self._stall(w.E_BUSY, "SET_MODE while armed or holding a frame")
                names = [m for m in self.modes if MODES[m][0] == value]
                if not names:
                    self._stall(w.E_BAD_MODE, f"no mode id {value}")
                self._mode = names[0]
                self._discard()
            elif request == w.ARM:
                if value not in (w.KIND_DARK, w.KIND_EXPOSED):
                    self._stall(w.E_BAD_KIND, f"ARM kind {value}")
                self._discard()
                self._armed, self._pulse = value, None
            elif request == w.DISARM:
                if self._held is not None or self._pulse is not None:
                    self._stall(w.E_BUSY, "DISARM with X-rays received: read the frame")
                self._armed = None
            elif request == w.ACK:
                if self._held is None:
                    self._stall(w.E_NO_FRAME, "ACK with no frame held")
                if value != self._held.number & 0xFFFF:
                    self._stall(w.E_WRONG_FRAME, f"ACK {value} but frame {self._held.number} held")
                self._discard()
            elif request == w.RESEND:
                if self._held is None:
                    self._stall(w.E_NO_FRAME, "RESEND with no frame held")
                self._transmit(self._held)
            else:
                self._stall(w.E_BAD_REQUEST, f"unknown OUT request 0x{request:02x}")
            self._last_error = w.E_NONE
            self._cond.notify_all()

    # --- bulk-IN endpoint ------------------------------------------------------------------

    def bulk_in(self, max_len: int, timeout_s: float | None) -> memoryview:
        """Up to ``max_len`` bytes of the current transfer; blocks until a frame is there."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._check_open()
                if self._tx:
                    chunk = self._tx[0]
                    out = chunk[:max_len]
                    if len(chunk) > max_len:
                        self._tx[0] = chunk[max_len:]
                    else:
                        self._tx.popleft()
                    return out
                if self._armed == w.KIND_DARK or (self._armed == w.KIND_EXPOSED and self._pulse):
                    self._read_out()
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"panel {self.serial}: no frame ready")
                self._cond.wait(remaining)

    # --- internals (called with the lock held) ---------------------------------------------

    def _read_out(self) -> None:
        kerma, scene = self._pulse if self._pulse else (0.0, "open")
        kind = self._armed
        assert kind is not None
        model = self._model_for(self._mode)
        pixels = model.frame(kerma, scene)
        payload = pixels.astype("<u2", copy=False).tobytes()
        step = 1
        if self.faults.skip_frame_number:
            self.faults.skip_frame_number -= 1
            step = 2
        number = (self._last_frame + step) & 0xFFFFFFFF
        self._last_frame = number
        header = w.frame_header(frame_number=number, rows=model.rows, columns=model.columns,
                                bits=BITS_STORED, kind=kind, mode_id=model.mode_id,
                                temperature_c=model.temperature_c,
                                timestamp_us=(time.time_ns() // 1000 if self.faults.timestamp_us is None
                                              else self.faults.timestamp_us),
                                payload_length=len(payload), crc32=zlib.crc32(payload))
        self._armed, self._pulse = None, None
        self._held = _Held(number, header, payload)
        self.frames_read_out += 1
        LOGGER.debug("panel %s: frame %d read out (%s, %.2f uGy)", self.serial, number,
                     "exposed" if kind else "dark", kerma)
        self._transmit(self._held)

    def _transmit(self, held: _Held) -> None:
        payload: bytes | bytearray = held.payload
        view = memoryview(payload)
        if self.faults.corrupt_crc:
            self.faults.corrupt_crc -= 1
            corrupted = bytearray(payload)
            corrupted[len(corrupted) // 2] ^= 0x10  # one bit flipped on the wire
            view = memoryview(corrupted)
        if self.faults.truncate:
            self.faults.truncate -= 1
            keep = int(len(view) * self.faults.truncate_keep) & ~1
            view = view[:keep]
        header: bytes | bytearray = held.header
        if self.faults.mangle_header:
            self.faults.mangle_header -= 1
            header = bytearray(header)
            header[self.faults.mangle_offset] ^= self.faults.mangle_xor
        self.transmissions += 1
        self._tx.clear()
        self._tx.append(memoryview(header))
        self._tx.append(view)
        self._cond.notify_all()

    def _discard(self) -> None:
        self._held = None
        self._tx.clear()
        self._armed, self._pulse = None, None

    def _stall(self, code: int, why: str) -> NoReturn:
        self._last_error = code
        LOGGER.info("panel %s: STALL: %s", self.serial, why)
        raise Stall(why)

    def _check_open(self) -> None:
        if self._closed:
            raise Unplugged(f"panel {self.serial} is gone")
