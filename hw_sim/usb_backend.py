"""A pyusb backend that puts simulated panels on a simulated bus.

Pass it as ``backend=`` to ``usb.core.find`` (or to the driver's ``open_detector``): the
real driver then runs unchanged against hw_sim.panel.SimPanel, as ophyd-async swaps a
signal backend. Errors are raised as libusb would report them (pipe error for a STALL,
timeout, no device, busy) so the driver's error paths are the production ones.
"""

from __future__ import annotations

import errno
import logging
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core
import usb.util

from hw_sim import usb_wire as w
from hw_sim.panel import SimPanel, Stall, Unplugged

LOGGER = logging.getLogger(__name__)

# libusb error codes, as pyusb's libusb1 backend reports them.
_INVALID_PARAM, _NO_DEVICE, _NOT_FOUND, _BUSY, _TIMEOUT, _PIPE = -2, -4, -5, -6, -7, -9

_GET_STATUS, _GET_DESCRIPTOR = 0x00, 0x06
_DESC_DEVICE, _DESC_CONFIG, _DESC_STRING = 1, 2, 3
_STR_MANUFACTURER, _STR_PRODUCT, _STR_SERIAL = 1, 2, 3


def _usb_error(code: int, text: str, err: int) -> usb.core.USBError:
    return usb.core.USBError(text, code, err)


def _pipe(why: str) -> usb.core.USBError:
    return _usb_error(_PIPE, f"Pipe error ({why})", errno.EPIPE)


@dataclass(eq=False)
class _SimDevice:
    panel: SimPanel
    bus: int
    address: int
    generation: int = 0  # the panel's plug_generation when it enumerated at this address
    claimed_by: object | None = None


@dataclass(eq=False)
class _SimHandle:
    dev: _SimDevice
    configuration: int = 0
    claimed: set[int] = field(default_factory=set)


class SimUsbBackend(usb.backend.IBackend):
    """pyusb backend serving one or more SimPanels (each at its own bus address)."""

    def __init__(self, panels: Iterable[SimPanel] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._devices: list[_SimDevice] = []
        self._next_address = 1
        for panel in panels:
            self.plug(panel)

    def plug(self, panel: SimPanel) -> None:
        """Put a panel on this bus, or plug an unplugged one back in (it gets a new address)."""
        with self._lock:
            if any(d.panel is panel for d in self._devices):
                panel.plug()
                return
            self._next_address = self._next_address + 1
            self._devices.append(_SimDevice(panel, bus=1, address=self._next_address,
                                            generation=panel.plug_generation))

    def unplug(self, serial: str) -> None:
        """Pull the panel's cable: open handles see "No such device"; its held frames stay on it."""
        with self._lock:
            panels = [d.panel for d in self._devices if d.panel.serial == serial]
        for panel in panels:
            panel.unplug()

    # --- enumeration and descriptors -------------------------------------------------------

    def enumerate_devices(self) -> Iterator[_SimDevice]:
        with self._lock:
            for i, d in enumerate(self._devices):
                if d.generation != d.panel.plug_generation:  # re-plugged: enumerates at a new address
                    self._next_address = self._next_address + 1
                    self._devices[i] = _SimDevice(d.panel, bus=1, address=self._next_address,
                                                  generation=d.panel.plug_generation)
            devices = [d for d in self._devices if d.panel.present]
        return iter(devices)

    def get_parent(self, dev: _SimDevice) -> None:
        return None

    def get_device_descriptor(self, dev: _SimDevice) -> SimpleNamespace:
        return SimpleNamespace(**dict(
            bLength=18, bDescriptorType=_DESC_DEVICE, bcdUSB=0x0200, bDeviceClass=0xFF,
            bDeviceSubClass=0, bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=w.VENDOR_ID,
            idProduct=w.PRODUCT_ID, bcdDevice=0x0100, iManufacturer=_STR_MANUFACTURER,
            iProduct=_STR_PRODUCT, iSerialNumber=_STR_SERIAL, bNumConfigurations=1,
            address=dev.address, bus=dev.bus, port_number=dev.address, port_numbers=(dev.address,),
            speed=usb.util.SPEED_HIGH))

    def get_configuration_descriptor(self, dev: _SimDevice, config: int) -> SimpleNamespace:
        if config != 0:
            raise _usb_error(_NOT_FOUND, "Entity not found", errno.ENOENT)
        return SimpleNamespace(**dict(
            bLength=9, bDescriptorType=_DESC_CONFIG, wTotalLength=9 + 9 + 7, bNumInterfaces=1,
            bConfigurationValue=1, iConfiguration=0, bmAttributes=0xC0, bMaxPower=1,
            extra_descriptors=[]))

    def get_interface_descriptor(self, dev: _SimDevice, intf: int, alt: int, config: int) -> SimpleNamespace:
        if (intf, alt, config) != (0, 0, 0):
            raise IndexError(f"no interface {intf} alt {alt} in configuration {config}")
        return SimpleNamespace(**dict(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0, bNumEndpoints=1,
            bInterfaceClass=0xFF, bInterfaceSubClass=0, bInterfaceProtocol=0, iInterface=0,
            extra_descriptors=[]))

    def get_endpoint_descriptor(self, dev: _SimDevice, ep: int, intf: int, alt: int,
                                config: int) -> SimpleNamespace:
        if (ep, intf, alt, config) != (0, 0, 0, 0):
            raise IndexError(f"no endpoint {ep} in interface {intf}")
        return SimpleNamespace(**dict(
            bLength=7, bDescriptorType=5, bEndpointAddress=w.BULK_IN, bmAttributes=0x02,
            wMaxPacketSize=w.MAX_PACKET, bInterval=0, bRefresh=0, bSynchAddress=0,
            extra_descriptors=[]))

    def _raw_device_descriptor(self, dev: _SimDevice) -> bytes:
        return struct.pack("<BBHBBBBHHHBBBB", 18, _DESC_DEVICE, 0x0200, 0xFF, 0, 0, 64, w.VENDOR_ID,
                           w.PRODUCT_ID, 0x0100, _STR_MANUFACTURER, _STR_PRODUCT, _STR_SERIAL, 1)

    def _raw_configuration_descriptor(self) -> bytes:
        return (struct.pack("<BBHBBBBB", 9, _DESC_CONFIG, 25, 1, 1, 0, 0xC0, 1)
                + struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 1, 0xFF, 0, 0, 0)
                + struct.pack("<BBBBHB", 7, 5, w.BULK_IN, 0x02, w.MAX_PACKET, 0))

    # --- handles, configuration, interfaces ------------------------------------------------

    def open_device(self, dev: _SimDevice) -> _SimHandle:
        self._check_present(dev)
        return _SimHandle(dev)

    def close_device(self, dev_handle: _SimHandle) -> None:
        for intf in list(dev_handle.claimed):
            self.release_interface(dev_handle, intf)

    def set_configuration(self, dev_handle: _SimHandle, config_value: int) -> None:
        self._check_present(dev_handle.dev)
        if config_value not in (0, 1):
            raise _usb_error(_NOT_FOUND, "Entity not found", errno.ENOENT)
        dev_handle.configuration = config_value

    def get_configuration(self, dev_handle: _SimHandle) -> int:
        return dev_handle.configuration

    def set_interface_altsetting(self, dev_handle: _SimHandle, intf: int, altsetting: int) -> None:
        if (intf, altsetting) != (0, 0):
            raise _usb_error(_NOT_FOUND, "Entity not found", errno.ENOENT)

    def claim_interface(self, dev_handle: _SimHandle, intf: int) -> None:
        self._check_present(dev_handle.dev)
        if intf != 0:
            raise _usb_error(_NOT_FOUND, "Entity not found", errno.ENOENT)
        with self._lock:
            owner = dev_handle.dev.claimed_by
            if owner is not None and owner is not dev_handle:
                raise _usb_error(_BUSY, "Resource busy", errno.EBUSY)
            dev_handle.dev.claimed_by = dev_handle
            dev_handle.claimed.add(intf)

    def release_interface(self, dev_handle: _SimHandle, intf: int) -> None:
        with self._lock:
            dev_handle.claimed.discard(intf)
            if dev_handle.dev.claimed_by is dev_handle:
                dev_handle.dev.claimed_by = None

    def is_kernel_driver_active(self, dev_handle: _SimHandle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _SimHandle, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: _SimHandle, intf: int) -> None:
        return None

    def clear_halt(self, dev_handle: _SimHandle, ep: int) -> None:
        self._check_present(dev_handle.dev)
        try:
            dev_handle.dev.panel.clear_halt()
        except Unplugged:
            raise self._no_device() from None

    def reset_device(self, dev_handle: _SimHandle) -> None:
        self._check_present(dev_handle.dev)
        dev_handle.configuration = 0

    # --- transfers -------------------------------------------------------------------------

    def bulk_read(self, dev_handle: _SimHandle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        self._check_claimed(dev_handle, intf)
        if ep != w.BULK_IN:
            raise _usb_error(_INVALID_PARAM, "Invalid parameter", errno.EINVAL)
        target = memoryview(buff).cast("B")
        try:
            data = dev_handle.dev.panel.bulk_in(len(target), None if timeout == 0 else timeout / 1000)
        except TimeoutError:
            raise usb.core.USBTimeoutError("Operation timed out", _TIMEOUT, errno.ETIMEDOUT) from None
        except Stall as exc:
            raise _pipe(str(exc)) from None
        except Unplugged:
            raise self._no_device() from None
        if dev_handle.dev.generation != dev_handle.dev.panel.plug_generation:
            raise self._no_device()
        n = len(data)
        target[:n] = data
        return n

    def bulk_write(self, dev_handle: _SimHandle, ep: int, intf: int, data: Any, timeout: int) -> int:
        raise _usb_error(_INVALID_PARAM, "Invalid parameter (the panel has no OUT endpoint)",
                         errno.EINVAL)

    def ctrl_transfer(self, dev_handle: _SimHandle, bmRequestType: int, bRequest: int, wValue: int,
                      wIndex: int, data: Any, timeout: int) -> int:
        self._check_present(dev_handle.dev)
        buf = memoryview(data).cast("B")
        device_to_host = bool(bmRequestType & 0x80)
        rtype = bmRequestType & 0x60
        panel = dev_handle.dev.panel
        timeout_s = None if timeout == 0 else timeout / 1000
        try:
            if rtype == 0x00:
                reply = self._standard_request(dev_handle.dev, bRequest, wValue, wIndex)
            elif rtype == 0x40 and device_to_host:
                reply = panel.control_in(bRequest, wValue, len(buf), timeout_s)
            elif rtype == 0x40:
                panel.control_out(bRequest, wValue, bytes(buf), timeout_s)
                return len(buf)
            else:
                raise _pipe(f"request type 0x{bmRequestType:02x} not supported")
        except Stall as exc:
            raise _pipe(str(exc)) from None
        except TimeoutError:
            raise usb.core.USBTimeoutError("Operation timed out", _TIMEOUT, errno.ETIMEDOUT) from None
        except Unplugged:
            raise self._no_device() from None
        n = min(len(reply), len(buf))
        buf[:n] = reply[:n]
        return n

    def _standard_request(self, dev: _SimDevice, request: int, value: int, index: int) -> bytes:
        if request == _GET_STATUS:
            return b"\x01\x00"  # self-powered
        if request != _GET_DESCRIPTOR:
            raise _pipe(f"standard request 0x{request:02x} not supported")
        dtype, dindex = value >> 8, value & 0xFF
        if dtype == _DESC_DEVICE:
            return self._raw_device_descriptor(dev)
        if dtype == _DESC_CONFIG and dindex == 0:
            return self._raw_configuration_descriptor()
        if dtype == _DESC_STRING:
            if dindex == 0:
                return w.langid_descriptor()
            if index != w.LANGID_EN_US:
                raise _pipe(f"string descriptor language 0x{index:04x}")
            panel = dev.panel
            strings = {_STR_MANUFACTURER: panel.vendor, _STR_PRODUCT: panel.model_name,
                       _STR_SERIAL: panel.serial}
            if dindex in strings:
                return w.string_descriptor(strings[dindex])
        raise _pipe(f"descriptor type {dtype} index {dindex}")

    # --- checks ----------------------------------------------------------------------------

    def _check_present(self, dev: _SimDevice) -> None:
        with self._lock:
            present = dev in self._devices or any(d.panel is dev.panel for d in self._devices)
        if not present or not dev.panel.present or dev.generation != dev.panel.plug_generation:
            raise self._no_device()

    def _check_claimed(self, dev_handle: _SimHandle, intf: int) -> None:
        self._check_present(dev_handle.dev)
        if intf not in dev_handle.claimed:
            raise _usb_error(_NOT_FOUND, "Entity not found (interface not claimed)", errno.ENOENT)

    @staticmethod
    def _no_device() -> usb.core.USBError:
        return _usb_error(_NO_DEVICE, "No such device (it may have been disconnected)", errno.ENODEV)
