"""The simulator's control socket reaches every panel and generator fault this issue names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hw_sim.control import ControlServer, SimControl
from hw_sim.room import SimRoom


@pytest.fixture
def controlled(tmp_path: Path) -> Iterator[tuple[SimRoom, SimControl]]:
    room = SimRoom(seed=2, modes=("8x8",), wireless=True)
    room.start_generator()
    server = ControlServer(room, tmp_path / "control.sock",
                           on_unplug=lambda gone: room.usb_backend().unplug(room.serial) if gone
                           else room.usb_backend().plug(room.panel))
    client = SimControl(server.path)
    try:
        yield room, client
    finally:
        client.close()
        server.close()
        room.close()


def test_panel_faults_through_the_control_socket(controlled: tuple[SimRoom, SimControl]) -> None:
    room, ctl = controlled
    panel = room.panel
    ctl.call("stall_payload", n=2)
    ctl.call("halt_bulk", n=3)
    ctl.call("unplug_mid_transfer", n=1, replug_after_s=0.5)
    assert (panel.faults.stall_payload, panel.faults.halt_bulk, panel.faults.unplug_mid_transfer,
            panel.faults.replug_after_s) == (2, 3, 1, 0.5)
    ctl.call("hang")
    assert panel.faults.hung
    ctl.call("hang", hung=False)
    ctl.call("battery", percent=5, link_quality=30)
    assert (panel.battery_percent, panel.link_quality_percent) == (5, 30)
    ctl.call("unplug")
    assert ctl.status()["present"] is False and not list(room.usb_backend().enumerate_devices())
    ctl.call("plug")
    assert ctl.status()["present"] is True and panel.plug_generation == 1


def test_generator_faults_through_the_control_socket(controlled: tuple[SimRoom, SimControl]) -> None:
    room, ctl = controlled
    gen = room.generator
    ctl.call("tube_heat", percent=97)
    assert gen.heat_percent == pytest.approx(97, abs=0.5)  # it cools as it rests
    ctl.call("anode_fault", n=2)
    ctl.call("generator_silent")
    ctl.call("line_noise", text="BOOT v1.2")
    assert (gen._anode_fault, gen._silent, gen._noise) == (2, True, b"BOOT v1.2\r\n")
