"""The exposure state machine over the real drivers, with the simulator behind their seams."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from drivers.serial_generator.driver import SerialGenerator, open_generator
from drivers.usb_panel.driver import UsbPanelDetector, open_detector
from gateway.acquisition import ExposureSequence, ExposureState, IllegalTransition
from gateway.acquisition.state import check_transition
from gateway.errors import GeneratorError
from gateway.types import FrameKind, Technique
from hw_sim.room import SimRoom, kerma_at_detector_ugy

MODE = "8x8"


@pytest.fixture
def rig() -> Iterator[tuple[SimRoom, UsbPanelDetector, SerialGenerator]]:
    room = SimRoom(seed=5)
    detector = open_detector(mode=MODE, backend=room.usb_backend())
    generator = open_generator(port=room.start_generator(), timeout_s=5.0)
    try:
        yield room, detector, generator
    finally:
        generator.close()
        detector.close()
        room.close()


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
