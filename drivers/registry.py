"""Drivers by name, imported lazily from dotted paths (as pydicom registers pixel codecs).

A configuration names a driver ("usb_panel"); only the chosen driver's module is imported,
so a missing optional dependency of another driver never stops the gateway.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from gateway.errors import DeviceError

LOGGER = logging.getLogger(__name__)

DETECTORS: dict[str, str] = {"usb_panel": "drivers.usb_panel.driver:open_detector"}
GENERATORS: dict[str, str] = {"serial_generator": "drivers.serial_generator.driver:open_generator"}


def load_object(path: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr or not all(
            part.isidentifier() for part in module_name.split(".") + attr.split(".")):
        raise ValueError(f"bad object path {path!r}: expected 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DeviceError(f"cannot import {module_name!r} for {path!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise DeviceError(f"{module_name!r} has no attribute {attr!r} (from {path!r})") from None
    return obj


def _lookup(kind: str, table: dict[str, str], name: str) -> Any:
    try:
        path = table[name]
    except KeyError:
        raise DeviceError(f"unknown {kind} driver {name!r}; known: {', '.join(sorted(table))}") from None
    return load_object(path)


def open_detector(name: str, **kwargs: Any) -> Any:
    """Open a detector with the named driver; kwargs go to its ``open_detector``."""
    LOGGER.info("opening detector driver %s", name)
    return _lookup("detector", DETECTORS, name)(**kwargs)


def open_generator(name: str, **kwargs: Any) -> Any:
    """Open a generator with the named driver; kwargs go to its ``open_generator``."""
    LOGGER.info("opening generator driver %s", name)
    return _lookup("generator", GENERATORS, name)(**kwargs)
