"""The claimed panel's USB handle: control requests, bulk reads, and the errors they become."""

from __future__ import annotations

import array
import errno
from collections.abc import Callable

import usb.core
import usb.util

from drivers.usb_panel import protocol as p
from gateway.errors import DeviceError

_NO_DEVICE = -4  # LIBUSB_ERROR_NO_DEVICE


class PanelGone(DeviceError):
    """The panel left the bus (unplugged, powered off): 'No such device'."""


def gone(exc: usb.core.USBError) -> bool:
    return exc.errno == errno.ENODEV or exc.backend_error_code == _NO_DEVICE


class BadTransmission(Exception):
    """A transmission that a RESEND may cure (bad CRC, short payload, garbled header)."""

    def __init__(self, frame_number: int | None, problem: str) -> None:
        super().__init__(problem)
        self.frame_number = frame_number
        self.problem = problem


class PanelLink:
    """One handle on the panel (replaced by a new one when it comes back to the bus)."""

    def __init__(self, dev: usb.core.Device, *, control_timeout_ms: int) -> None:
        self.dev = dev
        self._control_timeout_ms = control_timeout_ms
        self.serial: str | None = None  # known once the panel has identified itself
        self.claimed = False

    def claim(self) -> None:
        dev = self.dev
        try:
            try:
                if dev.is_kernel_driver_active(p.INTERFACE):
                    dev.detach_kernel_driver(p.INTERFACE)
            except NotImplementedError:
                pass  # backends without kernel drivers (Windows, the simulator)
            dev.set_configuration()
            usb.util.claim_interface(dev, p.INTERFACE)
            self.claimed = True
        except usb.core.USBError as exc:
            raise DeviceError(f"cannot claim USB panel {self.where()}: {exc}") from exc

    def bulk_read(self, buf: array.array, timeout_s: float, on_timeout: Callable[[], str] | None,
                  frame_number: int | None = None) -> int:
        """A header read (``on_timeout`` names the wait) or a payload read (None: a timeout
        is a stalled transfer, re-read like a corrupt one)."""
        try:
            return int(self.dev.read(p.BULK_IN, buf, timeout=max(1, round(timeout_s * 1000))))
        except usb.core.USBTimeoutError:
            if on_timeout is None:
                raise BadTransmission(frame_number, f"transfer stalled: no payload within {timeout_s:.1f} s "
                                                    f"of the header") from None
            raise DeviceError(on_timeout()) from None
        except usb.core.USBError as exc:
            if gone(exc):
                raise PanelGone(f"panel {self.where()}: bulk read failed: {exc}") from exc
            if exc.errno == errno.EPIPE:
                try:
                    self.dev.clear_halt(p.BULK_IN)
                except usb.core.USBError as clear_exc:
                    if gone(clear_exc):
                        raise PanelGone(f"panel {self.where()}: {clear_exc}") from clear_exc
                    raise DeviceError(f"panel {self.where()}: bulk-IN halted and CLEAR_HALT failed: "
                                      f"{clear_exc}") from clear_exc
                raise BadTransmission(frame_number, "bulk-IN endpoint halted (STALL); halt cleared") from None
            raise DeviceError(f"panel {self.where()}: bulk read failed: {exc}") from exc

    # --- control requests ------------------------------------------------------------------

    def status(self) -> p.Status:
        try:
            return p.unpack_status(self.ctrl_in(p.Request.STATUS, p.STATUS_STRUCT.size))
        except p.ProtocolError as exc:
            raise DeviceError(f"panel {self.where()}: {exc}") from exc

    def ctrl_in(self, request: p.Request, length: int) -> bytes:
        try:
            data = self.dev.ctrl_transfer(p.REQ_IN, request, 0, 0, length, timeout=self._control_timeout_ms)
        except usb.core.USBError as exc:
            raise self._control_error(request, exc, f"{request.name} failed: {exc}") from exc
        return bytes(data)

    def _control_error(self, request: p.Request, exc: usb.core.USBError, text: str) -> DeviceError:
        if isinstance(exc, usb.core.USBTimeoutError):
            return DeviceError(f"panel {self.where()} is not answering: {request.name} timed out after "
                               f"{self._control_timeout_ms} ms; acquisition refused until it answers")
        if gone(exc):
            return PanelGone(f"panel {self.where()}: {text}")
        return DeviceError(f"panel {self.where()}: {text}")

    def ctrl_out(self, request: p.Request, value: int = 0, data: bytes | None = None) -> None:
        try:
            self.dev.ctrl_transfer(p.REQ_OUT, request, value, 0, data, timeout=self._control_timeout_ms)
        except usb.core.USBError as exc:
            if isinstance(exc, usb.core.USBTimeoutError) or gone(exc):
                raise self._control_error(request, exc, f"{request.name} wValue={value} failed: {exc}") from exc
            reason = ""
            if exc.errno == errno.EPIPE:  # STALL: the device says why in STATUS
                try:
                    err = self.status().last_error
                    reason = f" (device error {getattr(err, 'name', err)})"
                except DeviceError:
                    pass
            raise DeviceError(f"panel {self.where()}: {request.name} wValue={value} refused: {exc}"
                              f"{reason}") from exc

    def where(self) -> str:
        serial = self.serial if self.serial is not None else "?"
        return f"{self.dev.idVendor:04x}:{self.dev.idProduct:04x} serial {serial}"
