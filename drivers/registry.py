"""Drivers by registered name: importlib.metadata entry points, imported only when chosen.

A configuration names a driver ("usb_panel") or a pyusb backend; the name is looked up in
the entry points that installed packages register (groups `dxgate.detectors`,
`dxgate.generators`, `dxgate.usb_backends`, `dxgate.simulators`), never imported as a dotted
path — a configuration cannot make dxgate call an arbitrary function such as `os:system`.
Only the chosen driver's module is imported, so a missing optional dependency of another
driver never stops the gateway (as pydicom loads pixel codecs).
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from gateway.errors import DeviceError

LOGGER = logging.getLogger(__name__)

DETECTORS = "dxgate.detectors"
GENERATORS = "dxgate.generators"
USB_BACKENDS = "dxgate.usb_backends"
SIMULATORS = "dxgate.simulators"


def registered(group: str) -> dict[str, EntryPoint]:
    """The entry points of `group` by name."""
    return {ep.name: ep for ep in entry_points(group=group)}


def load(group: str, name: str) -> Any:
    """The object registered as `name` in `group`; DeviceError naming the known names otherwise."""
    known = registered(group)
    if name not in known:
        listed = ", ".join(sorted(known)) or "none installed"
        raise DeviceError(f"no {group.split('.')[-1][:-1]} named {name!r} is registered (known: {listed})")
    try:
        return known[name].load()
    except (ImportError, AttributeError) as exc:
        raise DeviceError(f"{group} {name!r} ({known[name].value}) cannot be loaded: {exc}") from exc


def open_detector(name: str, **kwargs: Any) -> Any:
    """Open a detector with the named driver; kwargs go to its ``open_detector``."""
    LOGGER.info("opening detector driver %s", name)
    return load(DETECTORS, name)(**kwargs)


def open_generator(name: str, **kwargs: Any) -> Any:
    """Open a generator with the named driver; kwargs go to its ``open_generator``."""
    LOGGER.info("opening generator driver %s", name)
    return load(GENERATORS, name)(**kwargs)


def open_usb_backend(name: str, **options: Any) -> Any:
    """A pyusb backend by registered name, made with `options` (the configured backend_options)."""
    return load(USB_BACKENDS, name)(**options)


def load_simulator(name: str = "room") -> Any:
    """The simulator's factory (demo and benchmarks reach it like hardware: by registered name)."""
    return load(SIMULATORS, name)
