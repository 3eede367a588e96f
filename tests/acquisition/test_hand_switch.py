"""The technologist's hand switch over the real drivers (simulated generator on a pty, panel
behind the pyusb backend): no dose without a release; every dose read out, even one that races
the release's withdrawal; a panel left armed or holding a frame by a host that went away."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from drivers.serial_generator.driver import SerialGenerator
from drivers.usb_panel.driver import UsbPanelDetector, open_detector
from gateway.acquisition import ExposureSequence, ExposureState
from gateway.alarms import Alarms
from gateway.errors import ExposureRefused
from gateway.types import FrameKind, Technique
from hw_sim.room import SimRoom, kerma_at_detector_ugy
from tests.acquisition.conftest import MODE

TECHNIQUE = Technique(kvp=70.0, mas=2.0)


def signal_of(room: SimRoom, pixels: np.ndarray) -> float:
    truth = room.model(MODE).truth
    return float((pixels.astype(np.float64) - truth.offset)[~truth.defective].mean())


def test_the_hand_switch_fires_only_while_released(rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    assert room.generator.press() is False  # nothing released: the generator does not fire
    generator.set_technique(TECHNIQUE)
    detector.arm(FrameKind.EXPOSED)
    generator.enable_hand_switch()
    assert generator.wait_hand_switch(0.05) is None  # nobody pressed
    assert room.generator.press() is True
    readback = generator.wait_hand_switch(5.0)
    assert readback is not None and readback.kvp == pytest.approx(70.0, rel=0.05)
    assert room.generator.press() is False  # one release, one exposure
    frame = detector.read_frame(5.0)
    assert len(room.pulses) == 1 and room.generator.presses_refused == 2
    kerma = kerma_at_detector_ugy(readback.kvp, readback.mas)
    assert signal_of(room, frame.pixels) == pytest.approx(room.model(MODE).counts_per_ugy * kerma, rel=0.05)


def test_an_exposure_racing_the_withdrawal_is_returned_by_disable(
        rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    """The generator fired and reported it; the host withdraws before it read the report: the
    report must come back from DISABLE (never dropped as a stale line)."""
    room, detector, generator = rig
    generator.set_technique(TECHNIQUE)
    detector.arm(FrameKind.EXPOSED)
    generator.enable_hand_switch()
    assert room.generator.press() is True  # EVT,DONE is on the line, unread
    readback = generator.disable_hand_switch()
    assert readback is not None and readback.mas == pytest.approx(2.0, rel=0.05)
    assert generator.disable_hand_switch() is None  # nothing more


def test_sequence_withdrawn_release_gives_no_dose_and_leaves_the_panel_idle(
        rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0)
    seen: list[ExposureState] = []
    seq.subscribe(lambda state, detail: seen.append(state))
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    assert seq.expose_on_hand_switch(TECHNIQUE, cancel, poll_s=0.05) is None
    assert seen == [ExposureState.PREPARING, ExposureState.READY, ExposureState.IDLE]
    assert room.pulses == [] and room.generator.press() is False  # the release is withdrawn
    detector.set_mode("4x4")  # the panel is no longer armed: a new mode is accepted


def test_sequence_reads_out_the_exposure_of_the_hand_switch(
        rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0, alarms=Alarms())
    cancel = threading.Event()
    pressed = threading.Timer(0.1, room.generator.press)
    pressed.start()
    result = seq.expose_on_hand_switch(TECHNIQUE, cancel, poll_s=0.05)
    assert result is not None
    frame, exposure = result
    assert exposure.dose_known and len(room.pulses) == 1
    assert signal_of(room, frame.pixels) > 1000  # the exposed frame, not a dark one


def test_a_release_whose_image_can_no_longer_be_kept_is_withdrawn(
        rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    """The release waits for the hand switch; meanwhile something the image needs lapses (here the
    check starts refusing): the release is withdrawn and the refusal raised, before any dose."""
    room, detector, generator = rig
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0)
    checks: list[int] = []

    def check() -> None:
        checks.append(1)
        if len(checks) >= 2:
            raise ExposureRefused("exposure refused before the tube fired: calibration expired")

    bound = threading.Event()
    timer = threading.Timer(5.0, bound.set)  # without the re-check this returns None here instead
    timer.start()
    try:
        with pytest.raises(ExposureRefused, match="calibration expired"):
            seq.expose_on_hand_switch(TECHNIQUE, bound, poll_s=0.02, check=check, recheck_s=0.05)
    finally:
        timer.cancel()
    assert seq.state is ExposureState.IDLE and room.pulses == []
    assert room.generator.press() is False  # the release is gone: the hand switch gives no dose
    detector.set_mode("4x4")  # and the panel is disarmed


def test_press_then_withdraw_in_the_sequence_still_keeps_the_frame(
        rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    """The cancel is already set when the sequence next looks, but the hand switch fired first."""
    room, detector, generator = rig
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0)
    cancel = threading.Event()

    def press_then_withdraw(state: ExposureState, detail: str) -> None:
        if state is ExposureState.READY:
            threading.Thread(target=lambda: (room.generator.press(), cancel.set())).start()

    seq.subscribe(press_then_withdraw)
    result = None
    while result is None and len(room.pulses) == 0:  # the press may land before or after the first wait
        result = seq.expose_on_hand_switch(TECHNIQUE, cancel, poll_s=10.0)
    assert result is not None, "X-rays were given but no frame came back"
    assert len(room.pulses) == 1


def test_a_garbled_event_while_released_reads_the_frame_with_the_dose_unknown(
        rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    alarms = Alarms()
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0, alarms=alarms)
    room.generator.garble_next_reply(1)  # the reply to TECH
    with pytest.raises(Exception, match="garbled"):
        seq.expose_on_hand_switch(TECHNIQUE, threading.Event(), poll_s=0.05)
    assert seq.state is ExposureState.IDLE and room.pulses == []  # refused before any release

    def garbled_press(state: ExposureState, detail: str) -> None:
        if state is ExposureState.READY:  # released: the hand switch's first line arrives garbled
            room.generator.garble_next_reply(1)
            threading.Thread(target=room.generator.press).start()

    seq.subscribe(garbled_press)
    result = seq.expose_on_hand_switch(TECHNIQUE, threading.Event(), poll_s=0.05)
    assert result is not None and not result[1].dose_known
    assert len(room.pulses) == 1 and [a.code for a in alarms.active()] == ["dose-unknown"]


def test_a_panel_left_armed_is_disarmed_and_a_held_frame_is_recovered_at_open() -> None:
    with SimRoom(seed=12) as room:
        first = open_detector(mode=MODE, backend=room.usb_backend())
        first.arm(FrameKind.EXPOSED)
        first.close()  # the host went away with the panel armed, no X-rays
        second = open_detector(mode="4x4", backend=room.usb_backend())
        assert second.recovered == [] and second.mode.name == "4x4"
        second.arm(FrameKind.EXPOSED)
        room.deliver(70.0, 2.0)  # X-rays, then the host dies before reading the frame
        second.close()
        third = open_detector(mode=MODE, backend=room.usb_backend())
        try:
            [frame] = third.recovered
            assert frame.meta.mode == "4x4" and frame.meta.flags == ()
            truth = room.model("4x4").truth
            sig = (frame.pixels.astype(np.float64) - truth.offset)[~truth.defective].mean()
            assert sig == pytest.approx(room.model("4x4").counts_per_ugy * kerma_at_detector_ugy(70.0, 2.0), rel=0.05)
            assert third.mode.name == MODE and room.panel.held_frame is None  # read, acknowledged, mode set
        finally:
            third.close()
