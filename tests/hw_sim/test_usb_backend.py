"""pyusb itself sees the simulated panel as a USB device (descriptors, strings, transfers)."""

from __future__ import annotations

import array
import errno
from collections.abc import Iterator

import pytest
import usb.control
import usb.core
import usb.util

from hw_sim import usb_wire as w
from hw_sim.room import SimRoom


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=3, serial="SIM-0042", modes=("8x8",)) as r:
        yield r


@pytest.fixture
def dev(room: SimRoom) -> Iterator[usb.core.Device]:
    d = usb.core.find(idVendor=0x1209, idProduct=0x0001, backend=room.usb_backend())
    assert d is not None
    yield d
    usb.util.dispose_resources(d)


def test_descriptors_and_strings(dev: usb.core.Device) -> None:
    assert (dev.idVendor, dev.idProduct, dev.bNumConfigurations) == (0x1209, 0x0001, 1)
    assert (dev.manufacturer, dev.product, dev.serial_number) == ("dxgate", "SimPanel 4343", "SIM-0042")
    assert usb.util.get_string(dev, dev.iSerialNumber) == "SIM-0042"
    cfg = dev[0]
    intf = cfg[(0, 0)]
    (ep,) = list(intf)
    assert (cfg.bConfigurationValue, intf.bInterfaceNumber, intf.bInterfaceClass) == (1, 0, 0xFF)
    assert (ep.bEndpointAddress, usb.util.endpoint_type(ep.bmAttributes), ep.wMaxPacketSize) == (
        0x81, usb.util.ENDPOINT_TYPE_BULK, 512)
    raw = usb.control.get_descriptor(dev, 18, usb.util.DESC_TYPE_DEVICE, 0)
    assert bytes(raw[8:12]) == bytes.fromhex("09120100")  # idVendor 1209, idProduct 0001, little-endian
    assert "SIM-0042" in str(dev)  # pyusb's full descriptor dump works too


def test_bulk_read_waits_for_an_armed_frame(dev: usb.core.Device) -> None:
    dev.set_configuration()
    with pytest.raises(usb.core.USBTimeoutError):
        dev.read(0x81, 512, timeout=50)  # nothing armed
    dev.ctrl_transfer(0x40, w.ARM, w.KIND_DARK, 0)
    header = dev.read(0x81, 512, timeout=2000)
    assert len(header) == w.HEADER_SIZE and bytes(header[:4]) == b"DXFR"
    payload = array.array("B", bytes(384 * 384 * 2))
    assert dev.read(0x81, payload, timeout=2000) == len(payload)
    status = dev.ctrl_transfer(0xC0, w.STATUS, 0, 0, 16)
    assert (status[0], status[4]) == (w.HOLDING, 1)


def test_refused_requests_stall_and_say_why(dev: usb.core.Device) -> None:
    with pytest.raises(usb.core.USBError) as err:
        dev.ctrl_transfer(0x40, w.ACK, 1, 0)
    assert err.value.errno == errno.EPIPE
    assert dev.ctrl_transfer(0xC0, w.STATUS, 0, 0, 16)[1] == w.E_NO_FRAME
    with pytest.raises(usb.core.USBError):
        dev.ctrl_transfer(0x40, w.SET_MODE, 0, 0)  # 1x1 is not one of this panel's modes
    assert dev.ctrl_transfer(0xC0, w.STATUS, 0, 0, 16)[1] == w.E_BAD_MODE


def test_unplug_and_close(room: SimRoom, dev: usb.core.Device) -> None:
    room.usb_backend().unplug("SIM-0042")
    assert usb.core.find(idVendor=0x1209, backend=room.usb_backend()) is None
    with pytest.raises(usb.core.USBError) as err:
        dev.ctrl_transfer(0xC0, w.STATUS, 0, 0, 16)
    assert err.value.errno == errno.ENODEV
