"""The generator protocol in full through the real pyserial driver: three-point technique,
exposure end with kV, mA, ms, mAs and DAP, interlocks and faults, heartbeat, serial URLs,
line noise and silence. The simulator's record of what it delivered is the truth."""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Iterator

import pytest

from drivers.serial_generator.driver import SerialGenerator, TechniqueSetting, open_generator
from gateway.errors import GeneratorError, GeneratorRefused
from gateway.types import Technique
from hw_sim.generator import SimGenerator
from hw_sim.room import SimRoom


def test_three_point_technique_is_set_and_read_back(generator: SerialGenerator) -> None:
    assert generator.set_technique_3(81.4, 400, 12.5) == TechniqueSetting(kvp=81.0, ma=400.0, ms=12.5, mas=5.0)
    assert generator.read_technique() == TechniqueSetting(kvp=81.0, ma=400.0, ms=12.5, mas=5.0)
    generator.set_technique(Technique(kvp=70, mas=2))  # two-point: the generator's own mA
    assert generator.read_technique() == TechniqueSetting(kvp=70.0, ma=200.0, ms=10.0, mas=2.0)
    with pytest.raises(GeneratorRefused, match="refused TECH3: RANGE"):
        generator.set_technique_3(80, 2000, 10)


def test_exposure_end_reports_kv_ma_ms_mas_and_dap(room: SimRoom, generator: SerialGenerator) -> None:
    generator.set_technique_3(80, 400, 12.5)
    generator.prepare()
    readback = generator.expose()
    (kvp, mas, kerma), = room.pulses  # what the simulator delivered
    assert readback.kvp == pytest.approx(kvp, abs=0.05) and readback.mas == pytest.approx(mas, abs=0.005)
    assert readback.tube_current_ma == pytest.approx(400, rel=0.011)
    assert readback.exposure_time_ms == pytest.approx(mas / readback.tube_current_ma * 1000, rel=0.01)
    assert readback.dap_dgy_cm2 == pytest.approx(kerma * 1e-5 * room.generator.field_area_cm2, rel=1e-3)


def test_tube_heat_refuses_prepare_and_release_without_xrays(room: SimRoom, generator: SerialGenerator) -> None:
    room.generator.set_tube_heat(96)
    with pytest.raises(GeneratorRefused, match="refused PREP: HEAT tube heat 96 % \\(limit 95 %\\)"):
        generator.prepare()
    with pytest.raises(GeneratorRefused, match="refused ENABLE: HEAT"):
        generator.enable_hand_switch()
    assert float(generator.status()[3]) == 96 and room.pulses == []
    room.generator.set_tube_heat(10)
    generator.prepare()
    generator.expose()
    assert len(room.pulses) == 1 and float(generator.status()[3]) > 10  # the exposure heated the anode


def test_anode_not_up_to_speed_fires_nothing(room: SimRoom, generator: SerialGenerator) -> None:
    room.generator.anode_fault(2)
    with pytest.raises(GeneratorRefused, match="refused PREP: ANODE anode not up to speed"):
        generator.prepare()
    with pytest.raises(GeneratorRefused, match="STATE EXPOSE without PREP"):
        generator.expose()
    generator.enable_hand_switch()
    assert room.generator.press() is False  # the hand switch: prepared, rotor slow, refused
    with pytest.raises(GeneratorRefused, match="refused the hand switch: ANODE"):
        generator.wait_hand_switch(5)
    assert room.pulses == []


def test_door_open_interlock_blocks_the_hand_switch(room: SimRoom, generator: SerialGenerator) -> None:
    room.generator.interlock("door open")
    with pytest.raises(GeneratorRefused, match="refused ENABLE: INTERLOCK door open"):
        generator.enable_hand_switch()
    assert room.generator.press() is False and room.pulses == []


def test_line_noise_is_skipped(room: SimRoom, generator: SerialGenerator) -> None:
    room.generator.noise_before_next_reply(b"\x00\xff~~ power-up banner ~~\r\n\r\n")
    assert generator.set_technique(Technique(kvp=90, mas=4)) == Technique(kvp=90.0, mas=4.0)
    room.generator.noise_before_next_reply(b"\x00\x00")  # noise glued to the front of the reply
    generator.prepare()
    assert generator.expose().kvp == pytest.approx(90, rel=0.011)


def test_a_silent_generator_never_yields_an_unconfirmed_exposure() -> None:
    with SimRoom(seed=7, modes=("8x8",)) as room:
        generator = open_generator(port=room.start_generator(), timeout_s=0.3)
        try:
            generator.prepare()
            room.generator.go_silent()
            with pytest.raises(GeneratorError, match=r"no reply to EXPOSE within 0.3 s"):
                generator.expose()  # it fired (the room knows) but never confirmed: no readback is made up
            assert len(room.pulses) == 1
            with pytest.raises(GeneratorError, match=r"no reply to STATUS within 0.3 s"):
                generator.status()
            room.generator.go_silent(False)
            assert generator.status()[0] == "IDLE"
        finally:
            generator.close()


def test_a_garbled_done_is_no_readback(room: SimRoom, generator: SerialGenerator) -> None:
    generator.prepare()
    room.generator.garble_next_reply(1)
    with pytest.raises(GeneratorError, match="garbled reply to EXPOSE"):
        generator.expose()
    assert len(room.pulses) == 1  # X-rays were given: the caller keeps the frame with the dose unknown


def test_a_garbled_query_is_asked_again(room: SimRoom, generator: SerialGenerator) -> None:
    room.generator.garble_next_reply(1)
    assert generator.read_technique().kvp == 70.0
    room.generator.garble_next_reply(2)
    with pytest.raises(GeneratorError, match="garbled reply to GETTECH"):
        generator.read_technique()


def test_heartbeat_and_a_silent_host_loses_its_release() -> None:
    pulses: list[tuple[float, float]] = []
    sim = SimGenerator(lambda kv, mas: pulses.append((kv, mas)) or 1.0, heartbeat_timeout_s=0.3)
    gen = open_generator(port=sim.path, timeout_s=3.0)
    try:
        assert gen.heartbeat() < 3.0
        gen.enable_hand_switch()
        with pytest.raises(GeneratorRefused, match="HEARTBEAT,host silent: release withdrawn"):
            gen.wait_hand_switch(5)  # the host sends nothing while released: the generator withdraws it
        assert sim.press() is False and pulses == [] and sim.releases_withdrawn == 1
    finally:
        gen.close()
        sim.close()


def test_a_host_waiting_with_heartbeats_keeps_its_release() -> None:
    pulses: list[tuple[float, float]] = []
    sim = SimGenerator(lambda kv, mas: pulses.append((kv, mas)) or 1.0, heartbeat_timeout_s=0.3)
    gen = open_generator(port=sim.path, timeout_s=3.0)
    try:
        gen.enable_hand_switch()
        assert gen.wait_hand_switch(1.0, heartbeat_s=0.1) is None  # three timeouts long, nobody pressed
        assert sim.state == "ENABLED" and sim.releases_withdrawn == 0
        threading.Thread(target=sim.press).start()
        readback = gen.wait_hand_switch(5.0, heartbeat_s=0.1)
        assert readback is not None and len(pulses) == 1
        assert gen.disable_hand_switch() is None
    finally:
        gen.close()
        sim.close()


def test_loop_url_echo_is_a_clear_error() -> None:
    with pytest.raises(GeneratorError, match=r"unexpected reply to ID: b'\$ID\*"):
        open_generator(port="loop://", timeout_s=0.5)


@pytest.fixture
def terminal_server(room: SimRoom) -> Iterator[int]:
    """A serial-to-TCP terminal server in front of the simulated generator's pty."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    tty = os.open(room.start_generator(), os.O_RDWR | os.O_NOCTTY)
    stop = threading.Event()

    def relay() -> None:
        conn, _ = listener.accept()
        with conn:
            def up() -> None:
                while data := conn.recv(4096):
                    os.write(tty, data)
            threading.Thread(target=up, daemon=True).start()
            while not stop.is_set():
                ready, _, _ = select.select([tty], [], [], 0.1)
                if ready:
                    conn.sendall(os.read(tty, 4096))

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        os.close(tty)


def test_a_socket_url_reaches_the_generator_through_a_terminal_server(room: SimRoom, terminal_server: int) -> None:
    gen = open_generator(port=f"socket://127.0.0.1:{terminal_server}", timeout_s=3.0)
    try:
        assert gen.identity[2] == "GEN-0001"
        gen.set_technique(Technique(kvp=75, mas=3))
        gen.prepare()
        readback = gen.expose()
        (kvp, _, _), = room.pulses
        assert readback.kvp == pytest.approx(kvp, abs=0.05)
    finally:
        gen.close()
