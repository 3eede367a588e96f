"""The exposure state machine over the real drivers, with the simulator behind their seams."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.serial_generator.driver import SerialGenerator
from drivers.usb_panel.driver import UsbPanelDetector
from gateway.acquisition import ExposureSequence, ExposureState, IllegalTransition
from gateway.acquisition.state import check_transition
from gateway.alarms import Alarms
from gateway.errors import ConfigError, GeneratorError
from gateway.types import FrameKind, RawFrame, Technique
from hw_sim.room import SimRoom, kerma_at_detector_ugy
from tests.acquisition.conftest import MODE


def test_exposure_walks_every_state_in_order(rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0)
    seen: list[ExposureState] = []
    seq.subscribe(lambda state, detail: seen.append(state))
    frame, exposure = seq.expose(Technique(kvp=70.0, mas=2.0))
    assert seen == [ExposureState.PREPARING, ExposureState.READY, ExposureState.EXPOSING,
                    ExposureState.READOUT, ExposureState.DONE, ExposureState.IDLE]
    assert frame.meta.kind is FrameKind.EXPOSED and frame.meta.detector_serial == room.serial
    assert exposure.actual.kvp == pytest.approx(70.0, rel=0.05)
    assert exposure.actual.mas == pytest.approx(2.0, rel=0.05)
    # the frame carries the dose the generator delivered: signal over offset ~ counts/uGy x kerma
    truth = room.model(MODE).truth
    good = ~truth.defective
    signal = (frame.pixels.astype(np.float64) - truth.offset)[good].mean()
    expected = room.model(MODE).counts_per_ugy * kerma_at_detector_ugy(exposure.actual.kvp, exposure.actual.mas)
    assert signal == pytest.approx(expected, rel=0.05)


def test_dark_frame_needs_no_generator(rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0)
    frame = seq.dark()
    assert frame.meta.kind is FrameKind.DARK
    assert room.pulses == []
    assert seq.state is ExposureState.IDLE


def test_generator_interlock_fails_the_exposure_and_returns_to_idle(
        rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0)
    seen: list[tuple[ExposureState, str]] = []
    seq.subscribe(lambda state, detail: seen.append((state, detail)))
    room.generator.interlock("door open")
    with pytest.raises(GeneratorError, match="door open"):
        seq.expose(Technique(kvp=70.0, mas=2.0))
    assert [s for s, _ in seen][-2:] == [ExposureState.FAILED, ExposureState.IDLE]
    assert "door open" in seen[-2][1]
    assert room.pulses == []  # no X-ray left the tube
    room.generator.clear_interlock()
    generator.reset()
    frame, _ = seq.expose(Technique(kvp=70.0, mas=2.0))  # the room works again once cleared
    assert frame.meta.kind is FrameKind.EXPOSED


def test_a_failing_listener_never_breaks_an_exposure(
        rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator], caplog: pytest.LogCaptureFixture) -> None:
    _, detector, generator = rig
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0)

    def broken(state: ExposureState, detail: str) -> None:
        raise RuntimeError("console went away")

    seq.subscribe(broken)
    frame = seq.dark()
    assert frame.meta.kind is FrameKind.DARK
    assert "state listener failed" in caplog.text


def test_out_of_order_steps_are_refused() -> None:
    with pytest.raises(IllegalTransition, match="from idle to exposing"):
        check_transition(ExposureState.IDLE, ExposureState.EXPOSING)
    with pytest.raises(IllegalTransition):
        check_transition(ExposureState.DONE, ExposureState.READY)


def _signal(room: SimRoom, frame_pixels: np.ndarray) -> float:
    truth = room.model(MODE).truth
    return float((frame_pixels.astype(np.float64) - truth.offset)[~truth.defective].mean())


def test_a_garbled_expose_reply_still_reads_out_and_keeps_the_frame(
        rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    alarms = Alarms()
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0, alarms=alarms)
    seen: list[ExposureState] = []
    seq.subscribe(lambda state, detail: seen.append(state))
    # garble exactly the EXPOSE reply: TECH and PREP come first, so arm the fault on EXPOSING
    seq.subscribe(lambda state, detail: room.generator.garble_next_reply(1) if state is ExposureState.EXPOSING
                  else None)
    frame, exposure = seq.expose(Technique(kvp=70.0, mas=2.0))
    assert len(room.pulses) == 1  # the tube fired ...
    assert frame.meta.kind is FrameKind.EXPOSED  # ... and its frame was read, not dropped
    kvp, mas, kerma = room.pulses[0]
    assert _signal(room, frame.pixels) == pytest.approx(room.model(MODE).counts_per_ugy * kerma, rel=0.05)
    assert exposure.actual is None and not exposure.dose_known
    assert len(exposure.problems) == 1 and exposure.problems[0].startswith("dose unknown: generator on ")
    assert "garbled reply to EXPOSE" in exposure.problems[0]
    assert [a.code for a in alarms.active()] == ["dose-unknown"]
    assert seen[-3:] == [ExposureState.READOUT, ExposureState.DONE, ExposureState.IDLE]
    assert seq.state is ExposureState.IDLE
    assert room.panel.held_frame is None  # ACKed: the next ARM discards nothing


def test_an_absurd_readback_is_flagged_and_kept_out(rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    alarms = Alarms()
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0, alarms=alarms)
    room.generator.readback_next("nan,-5,1e12,0.01")
    frame, exposure = seq.expose(Technique(kvp=70.0, mas=2.0))
    assert len(room.pulses) == 1 and frame.meta.kind is FrameKind.EXPOSED
    assert exposure.actual is not None
    assert (exposure.actual.kvp, exposure.actual.mas, exposure.actual.exposure_time_ms) == (None, None, None)
    assert exposure.actual.dap_dgy_cm2 == pytest.approx(0.01)  # the one sane value stays
    assert [p.split("=")[0] for p in exposure.problems] == [
        "generator readback kvp", "generator readback mas", "generator readback exposure_time_ms"]
    assert [a.code for a in alarms.active()] == ["dose-readback-invalid"]
    assert seq.state is ExposureState.IDLE


def test_a_frame_with_an_absurd_timestamp_is_kept_and_flagged(
        rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    alarms = Alarms()
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0, alarms=alarms)
    room.panel.set_timestamp_us(2**64 - 1)
    frame, exposure = seq.expose(Technique(kvp=70.0, mas=2.0))
    assert len(room.pulses) == 1 and exposure.dose_known
    assert frame.meta.flags == (f"device timestamp {2**64 - 1} us is out of range; host receive time used",)
    assert [a.code for a in alarms.active()] == ["frame-flagged"]
    assert seq.state is ExposureState.IDLE


def test_a_frame_counter_gap_after_a_dose_keeps_the_frame(
        rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    seq = ExposureSequence(detector, generator, frame_timeout_s=5.0)
    room.panel.skip_frame_number(1)
    frame, _ = seq.expose(Technique(kvp=70.0, mas=2.0))
    assert len(room.pulses) == 1 and frame.meta.frame_number == 2
    assert frame.meta.flags and frame.meta.flags[0].startswith("frame counter gap")


class _ExplodingPanel(UsbPanelDetector):
    """The real driver with a bug injected into readout (any exception, not a DxgateError)."""

    def read_frame(self, timeout_s: float) -> RawFrame:
        raise OverflowError("injected: timestamp arithmetic")


def test_no_failure_leaves_the_state_machine_stuck(rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    room, detector, generator = rig
    detector.__class__ = _ExplodingPanel
    try:
        seq = ExposureSequence(detector, generator, frame_timeout_s=5.0)
        seen: list[ExposureState] = []
        seq.subscribe(lambda state, detail: seen.append(state))
        with pytest.raises(OverflowError):
            seq.expose(Technique(kvp=70.0, mas=2.0))
        assert seen[-2:] == [ExposureState.FAILED, ExposureState.IDLE]
        assert seq.state is ExposureState.IDLE
    finally:
        detector.__class__ = UsbPanelDetector
    frame, _ = seq.expose(Technique(kvp=70.0, mas=2.0))  # and the next exposure works
    assert frame.meta.kind is FrameKind.EXPOSED


def test_non_finite_frame_timeout_is_refused(rig: tuple[SimRoom, UsbPanelDetector, SerialGenerator]) -> None:
    _, detector, generator = rig
    for bad in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(ConfigError, match="frame_timeout_s"):
            ExposureSequence(detector, generator, frame_timeout_s=bad)
