"""The simulated flat panel's firmware: control requests, frame readout and transmission.

Knows nothing of pyusb: hw_sim/usb_backend.py puts it on a (simulated) bus. Frames come
from a DetectorModel; an exposed frame reads out only once an X-ray pulse arrived while
armed (synchronised, software-triggered or by automatic exposure detection). Fault injection
corrupts what goes over the wire, never the frame the panel holds, so a RESEND can cure a
transmission error as on real hardware. Held frames survive an unplug (the panel's battery
keeps them), as the protocol's recovery rules expect.
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
from hw_sim.collimation import Field
from hw_sim.detector_model import BITS_STORED, MODES, DetectorModel

LOGGER = logging.getLogger(__name__)

SEQUENCE_CACHE_FRAMES = 4  # distinct frames synthesised per sequence, then cycled (readout speed)
MAX_HELD = 16  # frames the panel buffers in a sequence before it waits for the host's ACKs


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
class _Held:
    number: int
    header: bytes
    payload: bytes | memoryview


@dataclass
class _Sequence:
    remaining: int
    period_s: float
    kind: int
    stop: bool = False


class SimPanel:
    """One simulated panel. Thread-safe: the host thread and the generator thread both call in."""

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
        self._held: deque[_Held] = deque()
        self._sequence: _Sequence | None = None
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

    def stall_payload(self, n: int = 1) -> None:
        """The next N transmissions stop after the header: the payload never comes."""
        with self._cond:
            self.faults.stall_payload = n

    def halt_bulk(self, n: int = 1) -> None:
        """The next N transmissions halt the bulk-IN endpoint after the header (STALL)."""
        with self._cond:
            self.faults.halt_bulk = n

    def unplug_mid_transfer(self, n: int = 1, replug_after_s: float | None = None) -> None:
        """The next N transmissions lose the cable after the header (plugged back after
        ``replug_after_s`` seconds when given: the panel keeps its held frame meanwhile)."""
        with self._cond:
            self.faults.unplug_mid_transfer = n
            self.faults.replug_after_s = replug_after_s

    def unplug_at_ack(self, when: str, replug_after_s: float | None = None) -> None:
        """The cable goes with the next ACK: "before" it reached the panel (the frame stays held)
        or "after" the panel acted on it (the host never hears that it did)."""
        if when not in ("before", "after"):
            raise ValueError(f"unplug_at_ack: 'before' or 'after', not {when!r}")
        with self._cond:
            self.faults.unplug_at_ack = when
            self.faults.replug_after_s = replug_after_s

    def hang(self, hung: bool = True) -> None:
        """The firmware stops answering (every request times out) until hang(False)."""
        with self._cond:
            self.faults.hung = hung
            self._cond.notify_all()

    def set_battery(self, percent: int | None, link_quality: int | None = None) -> None:
        with self._cond:
            self.battery_percent, self.link_quality_percent = percent, link_quality

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

    # --- what the room does to the panel ---------------------------------------------------

    def exp_req(self) -> bool:
        """The generator's EXP_REQ on the sync line: EXP_OK (True) only while the panel
        integrates for a synchronised exposure and has received no pulse yet."""
        with self._cond:
            self.exp_requests += 1
            ok = self._armed == w.KIND_EXPOSED and self._pulse is None and self._present and not self.faults.hung
            LOGGER.info("panel %s: EXP_REQ -> %s", self.serial, "EXP_OK" if ok else "not ready")
            return ok

    def xray_pulse(self, kerma_ugy: float, scene: str, field: Field | None = None) -> bool:
        """X-rays reached the panel through ``scene`` and the collimated ``field`` (None: the
        whole panel). Returns whether it was integrating (else the dose is lost)."""
        with self._cond:
            armed = self._armed
            integrating = (
                (armed == w.KIND_EXPOSED)
                or (armed == w.KIND_SOFTWARE and self._window_end is not None
                    and time.monotonic() < self._window_end)
                or (armed == w.KIND_AED and kerma_ugy >= self.aed_threshold_ugy))
            if not integrating or self._pulse is not None:
                self.pulses_lost += 1
                LOGGER.warning("panel %s: X-ray pulse of %.2f uGy while not integrating: lost",
                               self.serial, kerma_ugy)
                return False
            self._pulse = (kerma_ugy, scene, field)
            self._cond.notify_all()
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            if self._sequence is not None:
                self._sequence.stop = True
            self._cond.notify_all()

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def held_frame(self) -> int | None:
        """Number of the frame held for the host (not yet ACKed), if any."""
        with self._cond:
            return self._held[0].number if self._held else None

    @property
    def frames_held(self) -> int:
        with self._cond:
            return len(self._held)

    def wait_frames_held(self, n: int, timeout_s: float) -> bool:
        """Block until at least ``n`` frames are held for the host; whether it happened in time."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._held) >= n, timeout_s)

    def _over_temperature(self) -> bool:
        return self._temperature_c() > self.max_temperature_c

    # --- control endpoint ------------------------------------------------------------------

    def control_in(self, request: int, value: int, length: int, timeout_s: float | None = None) -> bytes:
        with self._cond:
            self._check_answering(timeout_s)
            if request == w.IDENTIFY:
                data = w.identify_record(
                    vendor=self.vendor, model=self.model_name, serial=self.serial, firmware=self.firmware,
                    modes=[(MODES[m][0], m, MODES[m][1], MODES[m][1], MODES[m][2], BITS_STORED)
                           for m in self.modes])
                self._last_error = w.E_NONE
            elif request == w.STATUS:
                data = self._status_record()
            else:
                self._stall(w.E_BAD_REQUEST, f"unknown IN request 0x{request:02x}")
            return data[:length]

    def _status_record(self) -> bytes:
        if self._held:
            state = w.HOLDING
        elif self._armed is not None or self._sequence is not None:
            state = w.ARMED
        else:
            state = w.IDLE
        flags = (w.FLAG_OVER_TEMPERATURE if self._over_temperature() else 0) | (
            w.FLAG_WIRELESS if self.wireless else 0) | (w.FLAG_SEQUENCE if self._sequence else 0) | (
            w.FLAG_EXP_OK if self._armed == w.KIND_EXPOSED and self._pulse is None else 0)
        return w.status_record(state=state, last_error=self._last_error, mode_id=MODES[self._mode][0],
                               last_frame=self._last_frame, temperature_c=self._temperature_c(),
                               flags=flags, battery=self.battery_percent, link=self.link_quality_percent,
                               held=len(self._held))

    def control_out(self, request: int, value: int, data: bytes = b"", timeout_s: float | None = None) -> None:
        with self._cond:
            self._check_answering(timeout_s)
            if request == w.SET_MODE:
                if self._armed is not None or self._held or self._sequence is not None:
                    self._stall(w.E_BUSY, "SET_MODE while armed or holding a frame")
                names = [m for m in self.modes if MODES[m][0] == value]
                if not names:
                    self._stall(w.E_BAD_MODE, f"no mode id {value}")
                self._mode = names[0]
                self._discard()
            elif request == w.ARM:
                if value not in (w.KIND_DARK, w.KIND_EXPOSED, w.KIND_SOFTWARE, w.KIND_AED):
                    self._stall(w.E_BAD_KIND, f"ARM kind {value}")
                if self._sequence is not None:
                    self._stall(w.E_BUSY, "ARM while a sequence runs")
                if self._over_temperature():
                    self._stall(w.E_OVER_TEMPERATURE, f"ARM at {self._temperature_c():.1f} C "
                                                      f"(limit {self.max_temperature_c:.1f} C)")
                self._discard()
                self._armed, self._pulse = value, None
            elif request == w.TRIGGER:
                if self._armed != w.KIND_SOFTWARE or self._window_end is not None:
                    self._stall(w.E_BUSY, "TRIGGER without a software-trigger arming")
                self._window_end = time.monotonic() + max(value, 1) / 1000.0
                threading.Timer(max(value, 1) / 1000.0, self._notify).start()
            elif request == w.START_SEQUENCE:
                self._start_sequence(data)
            elif request == w.DISARM:
                if self._sequence is not None:
                    self._sequence.stop = True
                    self._sequence = None
                elif self._held or self._pulse is not None:
                    self._stall(w.E_BUSY, "DISARM with X-rays received: read the frame")
                self._armed, self._window_end = None, None
            elif request == w.ACK:
                if self.faults.unplug_at_ack == "before":
                    self._pull_cable()
                    raise Unplugged(f"panel {self.serial} is gone")
                if not self._held:
                    self._stall(w.E_NO_FRAME, "ACK with no frame held")
                if value != self._held[0].number & 0xFFFF:
                    self._stall(w.E_WRONG_FRAME, f"ACK {value} but frame {self._held[0].number} held")
                self._held.popleft()
                self._tx.clear()
                if self._held:
                    self._transmit(self._held[0])
                if self.faults.unplug_at_ack == "after":
                    self._pull_cable()
                    raise Unplugged(f"panel {self.serial} is gone")
            elif request == w.RESEND:
                if not self._held:
                    self._stall(w.E_NO_FRAME, "RESEND with no frame held")
                self._transmit(self._held[0])  # a halted endpoint stays halted until CLEAR_HALT
            else:
                self._stall(w.E_BAD_REQUEST, f"unknown OUT request 0x{request:02x}")
            self._last_error = w.E_NONE
            self._cond.notify_all()

    def clear_halt(self) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT) on bulk-IN: the endpoint works again (nothing is re-sent)."""
        with self._cond:
            self._check_open()
            self._halted = False

    # --- bulk-IN endpoint ------------------------------------------------------------------

    def bulk_in(self, max_len: int, timeout_s: float | None) -> memoryview:
        """Up to ``max_len`` bytes of the current transfer; blocks until a frame is there."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._check_open()
                if self._halted:
                    raise Stall("bulk-IN endpoint halted")
                if self._tx and not self.faults.hung:
                    return self._take(max_len)
                if not self.faults.hung and self._ready_to_read_out():
                    self._read_out()
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"panel {self.serial}: no frame ready")
                self._cond.wait(remaining)

    def _take(self, max_len: int) -> memoryview:
        chunk = self._tx[0]
        out = chunk[:max_len]
        if len(chunk) > max_len:
            self._tx[0] = chunk[max_len:]
        else:
            self._tx.popleft()
        if len(out) == w.HEADER_SIZE and out[:4] == b"DXFR":
            self._after_header()
        return out

    def _after_header(self) -> None:
        f = self.faults
        if f.stall_payload:
            f.stall_payload -= 1
            self._tx.clear()  # the payload never comes
        elif f.halt_bulk:
            f.halt_bulk -= 1
            self._tx.clear()
            self._halted = True
        elif f.unplug_mid_transfer:
            f.unplug_mid_transfer -= 1
            self._pull_cable()

    def _pull_cable(self) -> None:
        """A fault pulls the cable now (lock held); plugged back after replug_after_s if set."""
        self.faults.unplug_at_ack = ""
        self._present = False
        self._tx.clear()
        self._cond.notify_all()
        LOGGER.info("panel %s unplugged in the middle of a transfer", self.serial)
        if self.faults.replug_after_s is not None:
            threading.Timer(self.faults.replug_after_s, self.plug).start()

    def _ready_to_read_out(self) -> bool:
        armed = self._armed
        if armed == w.KIND_DARK:
            return True
        if armed in (w.KIND_EXPOSED, w.KIND_AED):
            return self._pulse is not None
        if armed == w.KIND_SOFTWARE:
            return self._window_end is not None and time.monotonic() >= self._window_end
        return False

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- sequences -------------------------------------------------------------------------

    def _start_sequence(self, data: bytes) -> None:
        if len(data) != w.SEQUENCE_STRUCT.size:
            self._stall(w.E_BAD_REQUEST, f"START_SEQUENCE with {len(data)} data bytes")
        count, period_us, kind = w.SEQUENCE_STRUCT.unpack(data)
        if kind not in (w.KIND_DARK, w.KIND_EXPOSED) or count < 1 or period_us < 1000:
            self._stall(w.E_BAD_KIND, f"START_SEQUENCE count {count} period {period_us} us kind {kind}")
        if self._armed is not None or self._held or self._sequence is not None:
            self._stall(w.E_BUSY, "START_SEQUENCE while armed or holding a frame")
        if self._over_temperature():
            self._stall(w.E_OVER_TEMPERATURE, "START_SEQUENCE over temperature")
        seq = _Sequence(count, period_us / 1e6, kind)
        self._sequence = seq
        threading.Thread(target=self._run_sequence, args=(seq, self._mode), daemon=True,
                         name=f"sim-panel-sequence-{self.serial}").start()

    def _run_sequence(self, seq: _Sequence, mode: str) -> None:
        """Reads out a frame every period on the panel's own clock; a full buffer (the host did
        not ACK) holds the next readout back: frames wait, none is dropped."""
        model = self._model_for(mode)
        kerma = self.fluoro_kerma_ugy if seq.kind == w.KIND_EXPOSED else 0.0
        cache = []
        for _ in range(SEQUENCE_CACHE_FRAMES):
            payload = model.frame(kerma, "open").astype("<u2", copy=False).tobytes()
            cache.append((payload, zlib.crc32(payload)))
        next_at = time.monotonic()
        i = 0
        with self._cond:
            while seq.remaining > 0 and not seq.stop and not self._closed:
                wait = next_at - time.monotonic()
                if wait <= 0 and len(self._held) >= MAX_HELD:
                    self.held_back.set()  # due, but the buffer is full: the host sets the pace
                    self._cond.wait()
                    continue
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                payload, crc = cache[i % len(cache)]
                self._hold_frame(model, seq.kind, payload, crc, kerma)
                i += 1
                seq.remaining -= 1
                next_at = max(next_at + seq.period_s, time.monotonic() - seq.period_s)
            if self._sequence is seq:
                self._sequence = None
            self._cond.notify_all()

    # --- internals (called with the lock held) ---------------------------------------------

    def _read_out(self) -> None:
        kerma, scene, field = self._pulse if self._pulse else (0.0, "open", None)
        kind = self._armed
        assert kind is not None
        model = self._model_for(self._mode)
        payload, crc = self._synthesise(model, kerma, scene, field)
        self._armed, self._pulse, self._window_end = None, None, None
        self._hold_frame(model, w.KIND_DARK if kind == w.KIND_DARK else w.KIND_EXPOSED, payload, crc, kerma)

    def _synthesise(self, model: DetectorModel, kerma: float, scene: str,
                    field: Field | None) -> tuple[bytes, int]:
        if self.frame_cache <= 0:
            payload = model.frame(kerma, scene, field).astype("<u2", copy=False).tobytes()
            return payload, zlib.crc32(payload)
        ring = self._cache.setdefault((self._mode, round(kerma, 3), scene, field), [])
        if len(ring) < self.frame_cache:
            payload = model.frame(kerma, scene, field).astype("<u2", copy=False).tobytes()
            ring.append((payload, zlib.crc32(payload)))
            return ring[-1]
        self._cache_next += 1
        return ring[self._cache_next % len(ring)]

    def _hold_frame(self, model: DetectorModel, kind: int, payload: bytes, crc: int, kerma: float) -> None:
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
                                payload_length=len(payload), crc32=crc)
        self._held.append(_Held(number, header, payload))
        self.frames_read_out += 1
        LOGGER.debug("panel %s: frame %d read out (%s, %.2f uGy)", self.serial, number,
                     "exposed" if kind else "dark", kerma)
        if len(self._held) == 1 and self._present:
            self._transmit(self._held[0])
        self._cond.notify_all()

    def _transmit(self, held: _Held) -> None:
        payload = held.payload
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
        self._held.clear()
        self._tx.clear()
        self._armed, self._pulse, self._window_end = None, None, None

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


def sequence_data(count: int, period_us: int, kind: int) -> bytes:
    """The data stage of START_SEQUENCE (for tools; the driver has its own encoder)."""
    return w.SEQUENCE_STRUCT.pack(count, period_us, kind)

