"""pyusb driver for flat panels speaking the dxgate panel protocol (docs/detector-protocol.md).

The same code talks to real hardware (libusb backend) and to the simulator (a pyusb
backend passed as ``backend``): tests swap what sits behind pyusb, never this driver.
"""

from __future__ import annotations

import array
import errno
import logging
import threading
import time
import zlib
from datetime import UTC, datetime
from typing import Any

import numpy as np
import usb.core
import usb.util

from drivers.usb_panel import protocol as p
from gateway.errors import DeviceError, DeviceNotFound, FrameError
from gateway.types import DetectorInfo, FrameKind, FrameMeta, RawFrame, ReadoutMode

LOGGER = logging.getLogger(__name__)

CONTROL_TIMEOUT_MS = 2000
PAYLOAD_TIMEOUT_FLOOR_S = 2.0  # once the header is in, the payload follows at bus speed


def _buffer(size: int) -> array.array:
    """A zeroed byte buffer for pyusb to read into, made in one allocation (a frame is megabytes)."""
    return array.array("B", b"\0") * size

# A device clock outside these years is wrong (unset RTC, a corrupt field that still passed
# the CRC); the host's receive time stands in, and the frame says so.
DEVICE_YEARS = (2000, 2999)


def device_time(timestamp_us: int) -> tuple[datetime, str]:
    """The frame's device timestamp as a UTC datetime, or the host's time and the reason."""
    try:
        when = datetime.fromtimestamp(timestamp_us / 1e6, tz=UTC)
    except (OverflowError, OSError, ValueError):
        when = None
    if when is None or not DEVICE_YEARS[0] <= when.year <= DEVICE_YEARS[1]:
        return datetime.now(UTC), f"device timestamp {timestamp_us} us is out of range; host receive time used"
    return when, ""


class _BadTransmission(Exception):
    """A transmission that a RESEND may cure (bad CRC, short payload, garbled header)."""

    def __init__(self, frame_number: int | None, problem: str) -> None:
        super().__init__(problem)
        self.frame_number = frame_number
        self.problem = problem


def open_detector(*, vendor_id: int = p.VENDOR_ID, product_id: int = p.PRODUCT_ID, serial: str = "",
                  mode: str = "2x2", backend: Any = None, read_attempts: int = 3) -> UsbPanelDetector:
    """Find the panel (by serial when given), claim it, identify it and set ``mode``."""
    if read_attempts < 1:
        raise ValueError(f"read_attempts must be >= 1, got {read_attempts}")
    ident = f"{vendor_id:04x}:{product_id:04x}" + (f" serial {serial!r}" if serial else "")
    try:
        candidates = list(usb.core.find(idVendor=vendor_id, idProduct=product_id, backend=backend,
                                        find_all=True))
    except usb.core.NoBackendError as exc:
        raise DeviceError(f"cannot look for USB panel {ident}: no libusb backend available") from exc
    except usb.core.USBError as exc:
        raise DeviceError(f"cannot look for USB panel {ident}: {exc}") from exc
    seen: list[str] = []
    chosen = None
    for dev in candidates:
        try:
            dev_serial = usb.util.get_string(dev, dev.iSerialNumber) or ""
        except (usb.core.USBError, ValueError) as exc:
            seen.append(f"<unreadable serial: {exc}>")
            continue
        seen.append(dev_serial)
        if not serial or dev_serial == serial:
            chosen = dev
            break
    if chosen is None:
        found = f" (found: {', '.join(seen)})" if seen else " (no device with that VID:PID attached)"
        raise DeviceNotFound(f"no USB panel {ident}{found}")
    detector = UsbPanelDetector(chosen, read_attempts=read_attempts)
    try:
        detector._start(mode)
    except BaseException:
        detector.close()
        raise
    return detector


class UsbPanelDetector:
    """One claimed panel. Implements gateway.ports.Detector structurally."""

    def __init__(self, dev: usb.core.Device, *, read_attempts: int = 3) -> None:
        self._dev = dev
        self._read_attempts = read_attempts
        self._lock = threading.RLock()
        self._info: DetectorInfo | None = None
        self._mode: ReadoutMode | None = None
        self._armed: FrameKind | None = None
        self._expected_frame = 1
        self._claimed = False
        self._closed = False
        # Frames found on the panel when it was opened (a dose whose host went away): kept by the gateway.
        self.recovered: list[RawFrame] = []

    # --- lifecycle -------------------------------------------------------------------------

    def _start(self, mode: str) -> None:
        dev = self._dev
        try:
            try:
                if dev.is_kernel_driver_active(p.INTERFACE):
                    dev.detach_kernel_driver(p.INTERFACE)
            except NotImplementedError:
                pass  # backends without kernel drivers (Windows, the simulator)
            dev.set_configuration()
            usb.util.claim_interface(dev, p.INTERFACE)
            self._claimed = True
        except usb.core.USBError as exc:
            raise DeviceError(f"cannot claim USB panel {self._where()}: {exc}") from exc
        try:
            ident = p.unpack_identity(self._ctrl_in(p.Request.IDENTIFY, p.IDENTIFY_MAX))
        except p.ProtocolError as exc:
            raise DeviceError(f"USB panel {self._where()} answered IDENTIFY outside the protocol: "
                              f"{exc}") from exc
        self._info = DetectorInfo(vendor=ident.vendor, model=ident.model, serial=ident.serial,
                                  firmware=ident.firmware, modes=ident.modes)
        status = self._status()
        self._expected_frame = (status.last_frame_number + 1) & 0xFFFFFFFF
        LOGGER.info("opened panel %s %s serial %s firmware %s (%d modes)", ident.vendor, ident.model,
                    ident.serial, ident.firmware, len(ident.modes))
        self._recover(status)
        self.set_mode(mode)

    def _recover(self, status: p.Status) -> None:
        """The panel as the last host left it: an arming without X-rays is ended; a frame that
        received X-rays (held, or armed with the pulse in) is read and kept in `recovered`."""
        state = status.state
        if state == p.State.IDLE:
            return
        if state == p.State.ARMED:
            try:
                self._ctrl_out(p.Request.DISARM)
                LOGGER.info("panel %s was left armed without X-rays: disarmed", self.info.serial)
                return
            except DeviceError:
                LOGGER.error("panel %s was left armed and has received X-rays: reading its frame", self.info.serial)
        modes = [m for m in self.info.modes if m.mode_id == status.mode_id]
        if not modes:
            raise DeviceError(f"panel {self._where()} holds a frame in unknown mode id {status.mode_id}")
        self._mode = modes[0]
        self._armed = FrameKind.EXPOSED
        if state == p.State.HOLDING:
            LOGGER.error("panel %s holds frame %d that no host acknowledged: reading it", self.info.serial,
                         status.last_frame_number)
            self._expected_frame = status.last_frame_number
            self._ctrl_out(p.Request.RESEND)
        self.recovered.append(self.read_frame(PAYLOAD_TIMEOUT_FLOOR_S * 5))

    def disarm(self) -> None:
        """End an arming that received no X-rays (STALL BUSY if a pulse arrived: read the frame)."""
        with self._lock:
            self._ctrl_out(p.Request.DISARM)
            self._armed = None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._claimed:
                    usb.util.release_interface(self._dev, p.INTERFACE)
            except usb.core.USBError as exc:
                LOGGER.warning("releasing panel interface failed: %s", exc)
            finally:
                usb.util.dispose_resources(self._dev)

    def __enter__(self) -> UsbPanelDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Detector port ---------------------------------------------------------------------

    @property
    def info(self) -> DetectorInfo:
        assert self._info is not None
        return self._info

    @property
    def mode(self) -> ReadoutMode:
        assert self._mode is not None
        return self._mode

    def set_mode(self, name: str) -> ReadoutMode:
        try:
            mode = self.info.mode(name)
        except KeyError as exc:
            raise DeviceError(exc.args[0]) from None
        with self._lock:
            self._ctrl_out(p.Request.SET_MODE, mode.mode_id)
            self._mode = mode
            self._armed = None
        LOGGER.info("panel %s: mode %s (%dx%d)", self.info.serial, mode.name, mode.rows, mode.columns)
        return mode

    def arm(self, kind: FrameKind) -> None:
        with self._lock:
            self._ctrl_out(p.Request.ARM, p.KIND_CODES[kind])
            self._armed = kind

    def temperature_c(self) -> float:
        with self._lock:
            return self._status().temperature_c

    def read_frame(self, timeout_s: float) -> RawFrame:
        """Read, check and ACK the armed frame.

        A bad CRC or size is re-read (RESEND) up to ``read_attempts`` times, then raised as
        FrameError. A gap in frame numbers is reported in the frame's flags, never refused: the
        frame passed its CRCs and may hold a dose. A timeout raises DeviceError
        and leaves the panel armed, so the caller may wait again.
        """
        with self._lock:
            if self._armed is None:
                raise DeviceError(f"panel {self.info.serial}: read_frame() without arm()")
            kind = self._armed
            deadline = time.monotonic() + timeout_s
            last_problem: _BadTransmission | None = None
            for attempt in range(1, self._read_attempts + 1):
                if attempt > 1:
                    self._ctrl_out(p.Request.RESEND)
                try:
                    header, pixels = self._read_transmission(deadline, timeout_s, kind)
                    break
                except _BadTransmission as bad:
                    last_problem = bad
                    LOGGER.warning("panel %s: frame %s read %d/%d: %s", self.info.serial,
                                   bad.frame_number, attempt, self._read_attempts, bad.problem)
            else:
                assert last_problem is not None
                number = "?" if last_problem.frame_number is None else last_problem.frame_number
                self._armed = None
                # This frame is reported, not missed: count on from the device's frame counter.
                self._expected_frame = (self._status().last_frame_number + 1) & 0xFFFFFFFF
                raise FrameError(f"panel {self.info.serial} frame {number}: {last_problem.problem} "
                                 f"after {self._read_attempts} reads")
            expected = self._expected_frame
            self._expected_frame = (header.frame_number + 1) & 0xFFFFFFFF
            self._armed = None
            flags: list[str] = []
            if header.frame_number != expected:
                # The frame itself passed both CRCs: it is valid, and after an exposure it may
                # hold a dose that cannot be given back. Report the gap; never refuse the frame.
                missed = (header.frame_number - expected) & 0xFFFFFFFF
                flags.append(f"frame counter gap: expected frame {expected}, got {header.frame_number} "
                             f"({missed} frame(s) missed before it)")
                LOGGER.warning("panel %s: %s", self.info.serial, flags[-1])
            self._ctrl_out(p.Request.ACK, header.frame_number & 0xFFFF)
            acquired_at, problem = device_time(header.timestamp_us)
            if problem:
                flags.append(problem)
                LOGGER.warning("panel %s frame %d: %s", self.info.serial, header.frame_number, problem)
            meta = FrameMeta(
                frame_number=header.frame_number, detector_serial=self.info.serial,
                mode=self.mode.name, rows=header.rows, columns=header.columns,
                bits_stored=header.bits_stored, kind=p.KINDS_BY_CODE[header.kind_code],
                temperature_c=header.temperature_c, acquired_at=acquired_at,
                crc32=header.payload_crc32, flags=tuple(flags))
            return RawFrame(pixels=pixels, meta=meta)

    # --- frame transfer --------------------------------------------------------------------

    def _read_transmission(self, deadline: float, timeout_s: float,
                           kind: FrameKind) -> tuple[p.FrameHeader, np.ndarray]:
        hbuf = _buffer(p.MAX_PACKET)
        n = self._bulk_read(hbuf, max(deadline - time.monotonic(), 0.001),
                            lambda: f"no frame from panel {self.info.serial} within {timeout_s:g} s "
                                    f"(armed {kind.value}"
                                    + ("; no X-ray pulse arrived)" if kind is FrameKind.EXPOSED else ")"))
        if n != p.HEADER_SIZE:
            raise _BadTransmission(None, f"frame header of {n} bytes, expected {p.HEADER_SIZE}")
        header = p.unpack_header(memoryview(hbuf)[:n])
        if p.header_crc32(memoryview(hbuf)[:n]) != header.header_crc32:
            raise _BadTransmission(None, "header CRC32 mismatch (header fields corrupt in transit)")
        self._check_header(header)
        payload = _buffer(header.payload_length)
        got = self._bulk_read(payload, max(deadline - time.monotonic(), PAYLOAD_TIMEOUT_FLOOR_S),
                              lambda: f"panel {self.info.serial} frame {header.frame_number}: payload "
                                      f"did not arrive")
        if got != header.payload_length:
            raise _BadTransmission(header.frame_number, f"size mismatch: payload {got} bytes, header "
                                   f"says {header.payload_length} (short transfer)")
        crc = zlib.crc32(payload)
        if crc != header.payload_crc32:
            raise _BadTransmission(header.frame_number, f"CRC32 mismatch (header "
                                   f"0x{header.payload_crc32:08x}, payload 0x{crc:08x})")
        pixels = np.frombuffer(payload, dtype="<u2").reshape(header.rows, header.columns)
        return header, pixels.astype(np.uint16, copy=False)

    def _check_header(self, h: p.FrameHeader) -> None:
        n = h.frame_number
        if h.magic != p.MAGIC:
            raise _BadTransmission(None, f"bad frame magic {h.magic!r} (expected {p.MAGIC!r})")
        if h.version != p.HEADER_VERSION or h.header_size != p.HEADER_SIZE:
            raise _BadTransmission(n, f"frame header version {h.version} size {h.header_size} not "
                                      f"supported (expected {p.HEADER_VERSION}/{p.HEADER_SIZE})")
        mode = self.mode
        if (h.rows, h.columns, h.mode_id) != (mode.rows, mode.columns, mode.mode_id):
            raise _BadTransmission(n, f"size mismatch: header {h.rows}x{h.columns} mode id {h.mode_id}, "
                                      f"mode {mode.name} is {mode.rows}x{mode.columns} id {mode.mode_id}")
        if h.payload_length != h.rows * h.columns * 2:
            raise _BadTransmission(n, f"size mismatch: header payload length {h.payload_length} != "
                                      f"{h.rows}*{h.columns}*2")
        if h.kind_code not in p.KINDS_BY_CODE or h.bits_stored != mode.bits_stored:
            raise _BadTransmission(n, f"bad header: kind {h.kind_code}, bits {h.bits_stored}")

    def _bulk_read(self, buf: array.array, timeout_s: float, on_timeout: Any) -> int:
        try:
            return int(self._dev.read(p.BULK_IN, buf, timeout=max(1, round(timeout_s * 1000))))
        except usb.core.USBTimeoutError:
            raise DeviceError(on_timeout()) from None
        except usb.core.USBError as exc:
            raise DeviceError(f"panel {self._where()}: bulk read failed: {exc}") from exc

    # --- control requests ------------------------------------------------------------------

    def _status(self) -> p.Status:
        try:
            return p.unpack_status(self._ctrl_in(p.Request.STATUS, p.STATUS_STRUCT.size))
        except p.ProtocolError as exc:
            raise DeviceError(f"panel {self._where()}: {exc}") from exc

    def _ctrl_in(self, request: p.Request, length: int) -> bytes:
        try:
            data = self._dev.ctrl_transfer(p.REQ_IN, request, 0, 0, length, timeout=CONTROL_TIMEOUT_MS)
        except usb.core.USBError as exc:
            raise DeviceError(f"panel {self._where()}: {request.name} failed: {exc}") from exc
        return bytes(data)

    def _ctrl_out(self, request: p.Request, value: int = 0) -> None:
        try:
            self._dev.ctrl_transfer(p.REQ_OUT, request, value, 0, None, timeout=CONTROL_TIMEOUT_MS)
        except usb.core.USBError as exc:
            reason = ""
            if exc.errno == errno.EPIPE:  # STALL: the device says why in STATUS
                try:
                    err = self._status().last_error
                    reason = f" (device error {getattr(err, 'name', err)})"
                except DeviceError:
                    pass
            raise DeviceError(f"panel {self._where()}: {request.name} wValue={value} refused: {exc}"
                              f"{reason}") from exc

    def _where(self) -> str:
        serial = self._info.serial if self._info else "?"
        return f"{self._dev.idVendor:04x}:{self._dev.idProduct:04x} serial {serial}"
