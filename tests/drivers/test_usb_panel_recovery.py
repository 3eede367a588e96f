"""Recovery the pyusb driver does by itself, each fault driven through the real driver with the
simulator behind pyusb: stalled transfers, a halted endpoint, a cable pulled in a transfer,
over-temperature, a panel that stops answering; and the status the gateway shows."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from drivers import registry
from drivers.usb_panel.driver import UsbPanelDetector, open_detector
from gateway.errors import DeviceError
from gateway.types import FrameKind, RawFrame
from hw_sim.room import SimRoom
from tests.drivers.conftest import TEST_MODES
from tests.service.processes import SimProcess


def reference_frames(n: int, seed: int = 7, modes: tuple[str, ...] = TEST_MODES, mode: str = "8x8") -> list[RawFrame]:
    """What a clean panel of the same seed reads out: the independent truth for re-read frames."""
    with SimRoom(seed=seed, modes=modes) as twin:
        det = open_detector(backend=twin.usb_backend(), mode=mode)
        try:
            frames = []
            for _ in range(n):
                det.arm(FrameKind.DARK)
                frames.append(det.read_frame(timeout_s=5))
            return frames
        finally:
            det.close()


@pytest.fixture
def quick(room: SimRoom) -> Iterator[UsbPanelDetector]:
    """A driver with short timeouts, so a stalled transfer or a mute panel shows in a fraction of a second."""
    det = open_detector(backend=room.usb_backend(), mode="8x8", control_timeout_s=0.3, payload_timeout_s=0.3,
                        replug_timeout_s=5.0)
    try:
        yield det
    finally:
        det.close()


def test_a_stalled_transfer_times_out_and_the_frame_is_read_again(room: SimRoom, quick: UsbPanelDetector) -> None:
    (reference,) = reference_frames(1)
    room.panel.stall_payload(1)  # header sent, the payload never comes
    quick.arm(FrameKind.DARK)
    frame = quick.read_frame(timeout_s=5)
    assert room.panel.transmissions == 2
    np.testing.assert_array_equal(frame.pixels, reference.pixels)
    assert (frame.meta.frame_number, frame.meta.flags) == (1, ())


def test_a_stalled_transfer_that_never_recovers_is_a_frame_error_not_a_hang(room: SimRoom,
                                                                            quick: UsbPanelDetector) -> None:
    room.panel.stall_payload(3)
    quick.arm(FrameKind.DARK)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"frame 1: transfer stalled: no payload within 0.3 s of the header "
                                          r"after 3 reads"):
        quick.read_frame(timeout_s=0.5)
    assert time.monotonic() - t0 < 3
    assert room.panel.held_frame == 1  # never acknowledged


def test_a_halted_bulk_endpoint_is_cleared_and_the_frame_read_again(room: SimRoom,
                                                                    detector: UsbPanelDetector) -> None:
    (reference,) = reference_frames(1)
    room.panel.halt_bulk(1)
    detector.arm(FrameKind.DARK)
    frame = detector.read_frame(timeout_s=5)
    np.testing.assert_array_equal(frame.pixels, reference.pixels)
    assert room.panel.transmissions == 2 and room.panel.held_frame is None


def test_a_cable_pulled_mid_transfer_is_found_again_by_serial_and_the_held_frame_re_read(
        room: SimRoom, quick: UsbPanelDetector) -> None:
    reference = reference_frames(2)
    room.panel.unplug_mid_transfer(1)
    quick.arm(FrameKind.DARK)

    def technologist() -> None:  # plugs the cable back once it is out
        assert room.panel.wait_present(False, 5)
        room.usb_backend().plug(room.panel)

    helper = threading.Thread(target=technologist)
    helper.start()
    frame = quick.read_frame(timeout_s=5)
    helper.join()
    assert quick.replugs == 1
    np.testing.assert_array_equal(frame.pixels, reference[0].pixels)  # the held frame, not a new one
    assert (frame.meta.frame_number, frame.meta.flags) == (1, ())
    assert room.panel.frames_read_out == 1 and room.panel.held_frame is None
    quick.arm(FrameKind.DARK)
    after = quick.read_frame(timeout_s=5)
    assert (after.meta.frame_number, after.meta.flags) == (2, ())
    np.testing.assert_array_equal(after.pixels, reference[1].pixels)


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_ack_lost_with_the_cable_delivers_the_frame_once(room: SimRoom, quick: UsbPanelDetector,
                                                             when: str) -> None:
    reference = reference_frames(2)
    room.panel.unplug_at_ack(when, replug_after_s=0.2)
    quick.arm(FrameKind.DARK)
    frame = quick.read_frame(timeout_s=5)
    np.testing.assert_array_equal(frame.pixels, reference[0].pixels)
    assert quick.replugs == 1 and room.panel.held_frame is None  # acknowledged exactly once, either way
    quick.arm(FrameKind.DARK)
    after = quick.read_frame(timeout_s=5)
    assert (after.meta.frame_number, after.meta.flags) == (2, ())
    np.testing.assert_array_equal(after.pixels, reference[1].pixels)


def test_a_panel_re_plugged_between_frames_is_found_again_at_the_next_arm(room: SimRoom,
                                                                         quick: UsbPanelDetector) -> None:
    room.usb_backend().unplug("SIM-0001")
    with pytest.raises(DeviceError, match=r"left the bus and did not come back within 0 s"):
        quick.arm(FrameKind.DARK)  # still out: refused at once, not waited for
    room.usb_backend().plug(room.panel)
    quick.arm(FrameKind.DARK)
    assert quick.read_frame(timeout_s=5).meta.frame_number == 1 and quick.replugs == 1


def test_a_panel_that_does_not_come_back_is_a_clear_error(room: SimRoom) -> None:
    det = open_detector(backend=room.usb_backend(), mode="8x8", replug_timeout_s=0.3)
    try:
        room.panel.unplug_mid_transfer(1)
        det.arm(FrameKind.DARK)
        with pytest.raises(DeviceError, match=r"panel SIM-0001 left the bus and did not come back within 0.3 s"):
            det.read_frame(timeout_s=5)
        assert det.status().state == "unplugged"
    finally:
        det.close()


def test_unplugged_in_a_sequence_no_frame_is_lost_and_none_doubled(room: SimRoom, quick: UsbPanelDetector) -> None:
    numbers, pixels_seen = [], []
    helper: threading.Thread | None = None
    for i, frame in enumerate(quick.sequence(12, fps=100, kind=FrameKind.DARK)):
        numbers.append(frame.meta.frame_number)
        pixels_seen.append(frame.meta.crc32)
        assert frame.meta.flags == ()
        if i == 4:
            room.panel.unplug_mid_transfer(1)
            helper = threading.Thread(target=lambda: room.panel.wait_present(False, 5) and room.usb_backend().plug(
                room.panel))
            helper.start()
    assert helper is not None
    helper.join()
    assert quick.replugs == 1
    assert numbers == list(range(1, 13))
    assert room.panel.frames_read_out == 12 and room.panel.frames_held == 0


def test_over_temperature_refuses_to_arm_with_a_clear_status(room: SimRoom, detector: UsbPanelDetector) -> None:
    room.set_temperature(47.5)
    with pytest.raises(DeviceError, match=r"panel SIM-0001 is over temperature \(47.5 C\): refusing to arm"):
        detector.arm(FrameKind.EXPOSED)
    status = detector.status()
    assert (status.state, status.over_temperature, status.ready) == ("idle", True, False)
    assert "over temperature (47.5 C)" in status.error
    assert room.panel.pulses_lost == 0 and room.deliver(70, 2) and room.panel.pulses_lost == 1  # not integrating
    with pytest.raises(DeviceError, match="over temperature"):
        detector.start_sequence(5, fps=10)
    room.set_temperature(38.0)
    detector.arm(FrameKind.DARK)
    assert detector.read_frame(timeout_s=5).meta.temperature_c == pytest.approx(38.0)
    assert detector.status().ready


def test_the_panel_itself_refuses_to_arm_over_temperature(room: SimRoom) -> None:
    room.set_temperature(50.0)
    with pytest.raises(Exception, match="ARM at 50.0 C"):
        room.panel.control_out(0x03, 1)


def test_a_panel_that_stops_answering_is_a_clear_error_and_no_hang(room: SimRoom, quick: UsbPanelDetector) -> None:
    room.panel.hang()
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"panel 1209:0001 serial SIM-0001 is not answering: STATUS timed out "
                                          r"after 300 ms; acquisition refused"):
        quick.arm(FrameKind.EXPOSED)
    status = quick.status()
    assert status.state == "not answering" and "timed out" in status.error and not status.ready
    assert time.monotonic() - t0 < 3
    room.panel.hang(False)
    assert quick.status().state == "idle"  # the refused arming never reached the panel
    quick.arm(FrameKind.DARK)
    assert quick.read_frame(timeout_s=5).meta.frame_number == 1


def test_status_shows_state_temperature_held_frames_battery_link_and_firmware() -> None:
    with SimRoom(seed=5, modes=TEST_MODES, wireless=True) as room:
        det = open_detector(backend=room.usb_backend(), mode="8x8")
        try:
            st = det.status()
            assert (st.state, st.temperature_c, st.frames_held, st.battery_percent, st.link_quality_percent,
                    st.firmware, st.over_temperature) == ("idle", 30.0, 0, 87, 92, "2.1.0", False)
            room.panel.set_battery(12, 40)
            det.start_sequence(3, fps=200, kind=FrameKind.DARK)
            assert room.panel.wait_frames_held(3, 5)
            st = det.status()
            assert (st.state, st.frames_held, st.battery_percent, st.link_quality_percent) == ("holding", 3, 12, 40)
            numbers = [det.read_frame(timeout_s=5).meta.frame_number for _ in range(3)]
            assert numbers == [1, 2, 3] and det.status().frames_held == 0
        finally:
            det.close()


def test_a_cabled_panel_reports_no_battery(detector: UsbPanelDetector) -> None:
    st = detector.status()
    assert (st.battery_percent, st.link_quality_percent) == (None, None)


# --- the simulator process: the socket backend, the control socket's faults ---------------------------------


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    proc = SimProcess(tmp_path / "sim").start("--modes", "8x8,4x4", "--seed", "7", "--wireless")
    try:
        yield proc
    finally:
        proc.stop()


def test_hot_unplug_mid_transfer_through_the_simulator_process(sim: SimProcess) -> None:
    reference = reference_frames(2)
    backend = registry.open_usb_backend("socket", path=sim.info["usb_socket"])
    det: UsbPanelDetector = registry.open_detector("usb_panel", backend=backend, mode="8x8", serial="SIM-0001",
                                                   replug_timeout_s=10.0)
    try:
        sim.call("unplug_mid_transfer", replug_after_s=0.3)
        det.arm(FrameKind.DARK)
        frame = det.read_frame(timeout_s=10)
        np.testing.assert_array_equal(frame.pixels, reference[0].pixels)
        det.arm(FrameKind.DARK)
        second = det.read_frame(timeout_s=10)
        np.testing.assert_array_equal(second.pixels, reference[1].pixels)
        truth = sim.call("status")
        assert (frame.meta.frame_number, second.meta.frame_number, det.replugs) == (1, 2, 1)
        assert (truth["frames_read_out"], truth["held_frame"], truth["present"]) == (2, None, True)
        assert truth["transmissions"] == 3  # the interrupted one, its re-read, the second frame
        st = det.status()
        assert (st.battery_percent, st.link_quality_percent, st.state) == (87, 92, "idle")
    finally:
        det.close()
        backend.close()
