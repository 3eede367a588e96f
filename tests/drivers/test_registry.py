"""Drivers by registered name (entry points), imported lazily, never by dotted path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from drivers import registry
from gateway.errors import DeviceError
from gateway.ports import Detector, Generator
from hw_sim.room import SimRoom

ROOT = Path(__file__).resolve().parents[2]


def test_names_resolve_to_the_registered_entry_points() -> None:
    from drivers.serial_generator.driver import open_generator
    from drivers.usb_panel.driver import open_detector
    from hw_sim.room import open_room
    assert registry.load(registry.DETECTORS, "usb_panel") is open_detector
    assert registry.load(registry.GENERATORS, "serial_generator") is open_generator
    assert registry.load_simulator("room") is open_room


@pytest.mark.parametrize("name", ["os:system", "os.system", "subprocess:call", "builtins:exec", "../usb_panel"])
def test_a_dotted_path_is_never_imported_or_called(name: str, tmp_path: Path) -> None:
    """A configuration once could name `os:system` and run a command: only registered names load."""
    marker = tmp_path / "ran"
    for open_it in (registry.open_detector, registry.open_generator, registry.open_usb_backend):
        with pytest.raises(DeviceError, match=rf"no \w+ named '{re.escape(name)}' is registered \(known: "):
            open_it(name, command=f"touch {marker}")
    assert not marker.exists()


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
    with pytest.raises(DeviceError, match=r"no detector named 'flatpanel9' is registered \(known: usb_panel\)"):
        registry.open_detector("flatpanel9")
    with pytest.raises(DeviceError, match=r"no generator named 'x' is registered \(known: serial_generator\)"):
        registry.open_generator("x")


def test_drivers_are_imported_only_when_used() -> None:
    code = ("import sys, drivers.registry\n"
            "loaded = [m for m in ('usb', 'serial', 'drivers.usb_panel.driver', "
            "'drivers.serial_generator.driver') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
