"""pyusb driver for flat panels speaking the dxgate panel protocol (docs/detector-protocol.md).

The same code talks to real hardware (libusb backend) and to the simulator (a pyusb
backend passed as ``backend``): tests swap what sits behind pyusb, never this driver.

Recovery it does by itself: a corrupt, short or stalled transmission and a halted bulk
endpoint are re-read (RESEND), never patched; a panel unplugged in the middle of a transfer
is found again by its serial, re-claimed, and its held frame read again (the frame number
tells a re-read from a new frame: none lost, none doubled); a panel that stops answering is
a DeviceError after the control timeout, never a hang.

This module holds the Detector port and the readout's state; the USB handle and its requests
are in `link`, a frame's transfer and checks in `frames`, finding the panel in `discovery`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import usb.core
import usb.util

from drivers.usb_panel import protocol as p
from drivers.usb_panel.discovery import find_panel, reattach
from drivers.usb_panel.frames import DEVICE_YEARS, device_time, read_transmission
from drivers.usb_panel.link import BadTransmission, PanelGone, PanelLink
from drivers.usb_panel.status import detector_status, unreachable
from gateway.errors import DeviceError, DeviceNotFound, FrameError
from gateway.types import DetectorInfo, DetectorStatus, FrameKind, FrameMeta, RawFrame, ReadoutMode

LOGGER = logging.getLogger(__name__)

__all__ = ["DEVICE_YEARS", "PanelGone", "UsbPanelDetector", "device_time", "open_detector"]

CONTROL_TIMEOUT_MS = 2000
PAYLOAD_TIMEOUT_FLOOR_S = 2.0  # once the header is in, the payload follows at bus speed
REPLUG_TIMEOUT_S = 10.0  # how long a panel unplugged in a transfer may take to come back


def open_detector(*, vendor_id: int = p.VENDOR_ID, product_id: int = p.PRODUCT_ID, serial: str = "",
                  mode: str = "2x2", backend: Any = None, read_attempts: int = 3,
                  control_timeout_s: float = CONTROL_TIMEOUT_MS / 1000,
                  payload_timeout_s: float = PAYLOAD_TIMEOUT_FLOOR_S,
                  replug_timeout_s: float = REPLUG_TIMEOUT_S) -> UsbPanelDetector:
    """Find the panel (by serial when given), claim it, identify it and set ``mode``."""
    if read_attempts < 1:
        raise ValueError(f"read_attempts must be >= 1, got {read_attempts}")
    chosen, seen = find_panel(vendor_id, product_id, serial, backend)
    if chosen is None:
        ident = f"{vendor_id:04x}:{product_id:04x}" + (f" serial {serial!r}" if serial else "")
        found = f" (found: {', '.join(seen)})" if seen else " (no device with that VID:PID attached)"
        raise DeviceNotFound(f"no USB panel {ident}{found}")
    detector = UsbPanelDetector(chosen, read_attempts=read_attempts, control_timeout_s=control_timeout_s,
                                payload_timeout_s=payload_timeout_s, replug_timeout_s=replug_timeout_s,
                                finder=lambda s: find_panel(vendor_id, product_id, s, backend)[0])
    try:
        detector._start(mode)
    except BaseException:
        detector.close()
        raise
    return detector


class UsbPanelDetector:
    """One claimed panel. Implements gateway.ports.Detector structurally."""

    def __init__(self, dev: usb.core.Device, *, read_attempts: int = 3,
                 control_timeout_s: float = CONTROL_TIMEOUT_MS / 1000,
                 payload_timeout_s: float = PAYLOAD_TIMEOUT_FLOOR_S, replug_timeout_s: float = REPLUG_TIMEOUT_S,
                 finder: Any = None) -> None:
        self._link = PanelLink(dev, control_timeout_ms=max(1, round(control_timeout_s * 1000)))
        self._read_attempts = read_attempts
        self._payload_timeout_s = payload_timeout_s
        self._replug_timeout_s = replug_timeout_s
        self._finder = finder
        self._closing = threading.Event()
        self._sequence_left = 0
        self.replugs = 0  # times the panel was found again after leaving the bus
        self._lock = threading.RLock()
        self._info: DetectorInfo | None = None
        self._mode: ReadoutMode | None = None
        self._armed: FrameKind | None = None
        self._expected_frame = 1
        self._closed = False
        # Frames found on the panel when it was opened (a dose whose host went away): kept by the gateway.
        self.recovered: list[RawFrame] = []

    # --- lifecycle -------------------------------------------------------------------------

    def _start(self, mode: str) -> None:
        self._link.claim()
        try:
            ident = p.unpack_identity(self._link.ctrl_in(p.Request.IDENTIFY, p.IDENTIFY_MAX))
        except p.ProtocolError as exc:
            raise DeviceError(f"USB panel {self._link.where()} answered IDENTIFY outside the protocol: "
                              f"{exc}") from exc
        self._info = DetectorInfo(vendor=ident.vendor, model=ident.model, serial=ident.serial,
                                  firmware=ident.firmware, modes=ident.modes)
        self._link.serial = ident.serial
        status = self._link.status()
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
                self._link.ctrl_out(p.Request.DISARM)
                LOGGER.info("panel %s was left armed without X-rays: disarmed", self.info.serial)
                return
            except DeviceError:
                LOGGER.error("panel %s was left armed and has received X-rays: reading its frame", self.info.serial)
        modes = [m for m in self.info.modes if m.mode_id == status.mode_id]
        if not modes:
            raise DeviceError(f"panel {self._link.where()} holds a frame in unknown mode id {status.mode_id}")
        self._mode = modes[0]
        self._armed = FrameKind.EXPOSED
        if state == p.State.HOLDING:
            LOGGER.error("panel %s holds frame %d that no host acknowledged: reading it", self.info.serial,
                         status.last_frame_number)
            self._expected_frame = status.last_frame_number
            self._link.ctrl_out(p.Request.RESEND)
        self.recovered.append(self.read_frame(PAYLOAD_TIMEOUT_FLOOR_S * 5))

    def disarm(self) -> None:
        """End an arming that received no X-rays (STALL BUSY if a pulse arrived: read the frame)."""
        with self._lock:
            self._link.ctrl_out(p.Request.DISARM)
            self._armed = None

    def close(self) -> None:
        self._closing.set()  # a wait for a re-plug ends now
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._link.claimed:
                    usb.util.release_interface(self._link.dev, p.INTERFACE)
            except usb.core.USBError as exc:
                LOGGER.warning("releasing panel interface failed: %s", exc)
            finally:
                usb.util.dispose_resources(self._link.dev)

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
            self._link.ctrl_out(p.Request.SET_MODE, mode.mode_id)
            self._mode = mode
            self._armed = None
        LOGGER.info("panel %s: mode %s (%dx%d)", self.info.serial, mode.name, mode.rows, mode.columns)
        return mode

    def arm(self, kind: FrameKind, trigger: p.Trigger = p.Trigger.SYNC) -> None:
        """Arm for one frame. An exposed frame waits for X-rays as ``trigger`` says: SYNC (the
        generator's EXP_REQ is answered while integrating), SOFTWARE (software_trigger() opens
        the window) or AED (the panel notices the X-ray onset). Refused over temperature."""
        with self._lock:
            try:
                self._refuse_if_over_temperature("arm")
            except PanelGone as gone:  # re-plugged since the last frame: a new handle, if it is back
                self._reconnect(gone, wait_s=0.0)
                self._refuse_if_over_temperature("arm")
            code = p.KIND_CODES[kind] if kind is FrameKind.DARK else int(trigger)
            self._link.ctrl_out(p.Request.ARM, code)
            self._armed = kind
            self._sequence_left = 0

    def software_trigger(self, window_ms: int) -> None:
        """Open the integration window of a SOFTWARE arming (calibration, QA): the frame reads
        out when it closes, with whatever X-rays arrived in it."""
        if not 1 <= window_ms <= 0xFFFF:
            raise ValueError(f"integration window {window_ms} ms outside 1..65535")
        with self._lock:
            self._link.ctrl_out(p.Request.TRIGGER, window_ms)

    def start_sequence(self, count: int, fps: float, kind: FrameKind = FrameKind.EXPOSED) -> None:
        """Start a sequence of ``count`` frames at ``fps``; read each with read_frame(). The panel
        holds frames until they are acknowledged, so a slow reader slows the panel, never loses
        a frame."""
        if count < 1 or not 0 < fps <= 1000:
            raise ValueError(f"sequence of {count} frames at {fps} frames/s")
        with self._lock:
            self._refuse_if_over_temperature("start a sequence")
            data = p.SEQUENCE_STRUCT.pack(count, round(1e6 / fps), p.KIND_CODES[kind])
            self._link.ctrl_out(p.Request.START_SEQUENCE, data=data)
            self._armed = kind
            self._sequence_left = count

    def sequence(self, count: int, fps: float, kind: FrameKind = FrameKind.EXPOSED,
                 frame_timeout_s: float = 5.0) -> Iterator[RawFrame]:
        """The frames of a sequence, in order, each acknowledged before it is yielded. Stopping
        early (closing the iterator) ends the sequence on the panel; frames it already read out
        are read and kept in `recovered`, never discarded (they may carry a dose)."""
        self.start_sequence(count, fps, kind)
        done = 0
        try:
            while done < count:
                yield self.read_frame(frame_timeout_s)
                done += 1
        finally:
            if done < count:
                self._stop_sequence(kind, frame_timeout_s)

    def _stop_sequence(self, kind: FrameKind, frame_timeout_s: float) -> None:
        with self._lock:
            self._sequence_left = 0
            self._armed = None
            held = 0
            try:
                self._link.ctrl_out(p.Request.DISARM)
                held = self._link.status().frames_held
                for _ in range(held):
                    self._armed = kind
                    self.recovered.append(self.read_frame(frame_timeout_s))
            except DeviceError as exc:
                LOGGER.warning("panel %s: ending the sequence early: %s", self.info.serial, exc)
            if held:
                LOGGER.warning("panel %s: sequence stopped early; %d frame(s) read out were kept", self.info.serial,
                               held)

    def temperature_c(self) -> float:
        with self._lock:
            return self._link.status().temperature_c

    def status(self) -> DetectorStatus:
        """The panel as the gateway shows it; never raises: a panel that does not answer or
        has left the bus is a state, with the error that says so."""
        firmware = self._info.firmware if self._info else ""
        try:
            with self._lock:
                st = self._link.status()
        except DeviceError as exc:
            return unreachable(exc, firmware)
        return detector_status(st, firmware)

    def _refuse_if_over_temperature(self, what: str) -> None:
        st = self._link.status()
        if st.over_temperature:
            raise DeviceError(f"panel {self.info.serial} is over temperature ({st.temperature_c:.1f} C): "
                              f"refusing to {what} until it cools")

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
            last_problem: BadTransmission | None = None
            attempt, resend = 0, False
            got: tuple[p.FrameHeader, np.ndarray] | None = None
            while got is None:
                try:
                    if resend:
                        self._link.ctrl_out(p.Request.RESEND)
                    attempt += 1
                    got = read_transmission(self._link, self.mode, self.info.serial, kind, deadline=deadline,
                                            timeout_s=timeout_s, payload_timeout_s=self._payload_timeout_s)
                except BadTransmission as bad:
                    last_problem = bad
                    LOGGER.warning("panel %s: frame %s read %d/%d: %s", self.info.serial,
                                   bad.frame_number, attempt, self._read_attempts, bad.problem)
                    if attempt >= self._read_attempts:
                        break
                    resend = True
                except PanelGone as gone:
                    attempt -= 1  # the cable, not the frame: no read attempt used
                    resend = self._resume_read(self._reconnect(gone))
                    deadline = max(deadline, time.monotonic() + self._payload_timeout_s)
            if got is None:
                assert last_problem is not None
                number = "?" if last_problem.frame_number is None else last_problem.frame_number
                self._armed = None
                self._sequence_left = 0
                # This frame is reported, not missed: count on from the device's frame counter.
                self._expected_frame = (self._link.status().last_frame_number + 1) & 0xFFFFFFFF
                raise FrameError(f"panel {self.info.serial} frame {number}: {last_problem.problem} "
                                 f"after {self._read_attempts} reads")
            header, pixels = got
            expected = self._expected_frame
            self._expected_frame = (header.frame_number + 1) & 0xFFFFFFFF
            if self._sequence_left > 1:
                self._sequence_left -= 1  # still armed for the sequence's next frame
            else:
                self._sequence_left = 0
                self._armed = None
            flags: list[str] = []
            if header.frame_number != expected:
                # The frame itself passed both CRCs: it is valid, and after an exposure it may
                # hold a dose that cannot be given back. Report the gap; never refuse the frame.
                missed = (header.frame_number - expected) & 0xFFFFFFFF
                flags.append(f"frame counter gap: expected frame {expected}, got {header.frame_number} "
                             f"({missed} frame(s) missed before it)")
                LOGGER.warning("panel %s: %s", self.info.serial, flags[-1])
            self._ack(header.frame_number)
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

    def _ack(self, number: int) -> None:
        try:
            self._link.ctrl_out(p.Request.ACK, number & 0xFFFF)
        except PanelGone as gone:
            st = self._reconnect(gone)
            if st.state == p.State.HOLDING and st.frames_held and st.last_frame_number >= number:
                try:
                    self._link.ctrl_out(p.Request.ACK, number & 0xFFFF)
                except DeviceError as exc:  # WRONG_FRAME / NO_FRAME: it was acknowledged before the cable went
                    LOGGER.info("panel %s: frame %d was acknowledged before it left the bus (%s)",
                                self.info.serial, number, exc)

    # --- leaving the bus and coming back -----------------------------------------------------

    def _reconnect(self, gone: PanelGone, wait_s: float | None = None) -> p.Status:
        """Find the panel again by its serial (it re-enumerates at a new address), claim it and
        return its STATUS; DeviceError if it is not back within ``wait_s`` (default: the re-plug
        timeout)."""
        if self._finder is None or self._info is None:
            raise gone
        serial = self.info.serial
        reattach(self._link, self._finder, serial, gone, wait_s=wait_s, replug_timeout_s=self._replug_timeout_s,
                 closing=self._closing)
        self.replugs += 1
        status = self._link.status()
        LOGGER.warning("panel %s is back (state %s, last frame %d, %d held)", serial,
                       getattr(status.state, "name", status.state), status.last_frame_number, status.frames_held)
        return status

    def _resume_read(self, status: p.Status) -> bool:
        """After a re-plug in a read: whether to RESEND (a frame is held: read it again — its
        frame number tells a re-read from a new frame) or to wait on (still integrating)."""
        if status.state == p.State.HOLDING:
            return True
        if status.state == p.State.ARMED:
            return False
        raise DeviceError(f"panel {self.info.serial} came back idle with no frame held: its arming was "
                          f"lost while it was away (last frame {status.last_frame_number})")
