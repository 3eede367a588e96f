"""Drivers by name, imported lazily from dotted paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drivers import registry
from gateway.errors import DeviceError
from gateway.ports import Detector, Generator
from hw_sim.room import SimRoom

ROOT = Path(__file__).resolve().parents[2]


def test_load_object_resolves_and_explains_bad_paths() -> None:
    from drivers.usb_panel.driver import open_detector
    assert registry.load_object("drivers.usb_panel.driver:open_detector") is open_detector
    with pytest.raises(ValueError, match="expected 'package.module:attribute'"):
        registry.load_object("drivers.usb_panel.driver.open_detector")
    with pytest.raises(DeviceError, match="cannot import 'drivers.nope'"):
        registry.load_object("drivers.nope:open")
    with pytest.raises(DeviceError, match="has no attribute 'nope'"):
        registry.load_object("drivers.usb_panel.driver:nope")


def test_open_by_name(room: SimRoom) -> None:
    det = registry.open_detector("usb_panel", backend=room.usb_backend(), mode="8x8")
    gen = registry.open_generator("serial_generator", port=room.start_generator(), timeout_s=3)
    try:
        assert isinstance(det, Detector) and isinstance(gen, Generator)
        assert det.info.serial == "SIM-0001"
    finally:
        det.close()
        gen.close()


def test_unknown_driver_names_the_known_ones() -> None:
    with pytest.raises(DeviceError, match=r"unknown detector driver 'flatpanel9'; known: usb_panel"):
        registry.open_detector("flatpanel9")
    with pytest.raises(DeviceError, match=r"unknown generator driver 'x'; known: serial_generator"):
        registry.open_generator("x")


def test_drivers_are_imported_only_when_used() -> None:
    code = ("import sys, drivers.registry\n"
            "loaded = [m for m in ('usb', 'serial', 'drivers.usb_panel.driver', "
            "'drivers.serial_generator.driver') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
