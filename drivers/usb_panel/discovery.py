"""Finding a panel on the bus: by VID:PID and serial, and again after it left and came back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import usb.core
import usb.util

from drivers.usb_panel.link import PanelGone, PanelLink
from gateway.errors import DeviceError

LOGGER = logging.getLogger(__name__)


def find_panel(vendor_id: int, product_id: int, serial: str, backend: Any) -> tuple[Any, list[str]]:
    """The first panel with this VID:PID (and serial, when given), and the serials seen."""
    ident = f"{vendor_id:04x}:{product_id:04x}" + (f" serial {serial!r}" if serial else "")
    try:
        candidates = list(usb.core.find(idVendor=vendor_id, idProduct=product_id, backend=backend,
                                        find_all=True))
    except usb.core.NoBackendError as exc:
        raise DeviceError(f"cannot look for USB panel {ident}: no libusb backend available") from exc
    except usb.core.USBError as exc:
        raise DeviceError(f"cannot look for USB panel {ident}: {exc}") from exc
    seen: list[str] = []
    for dev in candidates:
        try:
            dev_serial = usb.util.get_string(dev, dev.iSerialNumber) or ""
        except (usb.core.USBError, ValueError) as exc:
            seen.append(f"<unreadable serial: {exc}>")
            continue
        seen.append(dev_serial)
        if not serial or dev_serial == serial:
            return dev, seen
        usb.util.dispose_resources(dev)
    return None, seen


def reattach(link: PanelLink, finder: Callable[[str], Any], serial: str, gone: PanelGone, *,
             wait_s: float | None, replug_timeout_s: float, closing: threading.Event) -> None:
    """Find the panel again by its serial (it re-enumerates at a new address) and claim it on
    ``link``; PanelGone if it is not back within ``wait_s`` (default: the re-plug timeout),
    DeviceError once ``closing`` is set."""
    LOGGER.warning("panel %s left the bus (%s); waiting up to %g s for it to come back", serial, gone,
                   replug_timeout_s)
    try:
        usb.util.dispose_resources(link.dev)
    except usb.core.USBError as exc:
        LOGGER.debug("disposing of the vanished panel's handle: %s", exc)
    link.claimed = False
    wait_s = replug_timeout_s if wait_s is None else wait_s
    end = time.monotonic() + wait_s
    delay = 0.02
    while True:  # pyusb has no hot-plug events: enumerate again, backing off
        try:
            dev = finder(serial)
        except DeviceError as exc:
            LOGGER.debug("looking for panel %s: %s", serial, exc)
            dev = None
        if dev is not None:
            break
        if time.monotonic() >= end:
            raise PanelGone(f"panel {serial} left the bus and did not come back within "
                            f"{wait_s:g} s ({gone})") from gone
        if closing.wait(delay):
            raise DeviceError(f"panel {serial}: closed while waiting for it to come back") from gone
        delay = min(delay * 2, 0.25)
    link.dev = dev
    link.claim()
