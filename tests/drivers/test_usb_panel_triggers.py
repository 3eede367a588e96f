"""The panel's triggers through the real drivers: synchronised with the generator (EXP_REQ /
EXP_OK: no X-rays before the panel integrates), software trigger, automatic exposure detection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from drivers import registry
from drivers.serial_generator.driver import open_generator
from drivers.usb_panel.driver import UsbPanelDetector, open_detector
from drivers.usb_panel.protocol import Trigger
from gateway.errors import GeneratorRefused
from gateway.types import FrameKind, RawFrame, Technique
from hw_sim.room import SimRoom, kerma_at_detector_ugy
from tests.drivers.conftest import TEST_MODES
from tests.service.processes import SimProcess


def signal_ugy(room: SimRoom, frame: RawFrame) -> float:
    """Mean air kerma the frame shows, from the simulator's ground truth (offset, sensitivity)."""
    model = room.model(frame.meta.mode)
    good = ~model.truth.defective
    return float((frame.pixels[good].astype(np.float64) - model.truth.offset[good]).mean() / model.counts_per_ugy)


@pytest.fixture
def synced() -> Iterator[SimRoom]:
    with SimRoom(seed=7, modes=TEST_MODES, sync_link=True) as r:
        yield r


def test_synchronised_the_generator_fires_only_on_exp_ok(synced: SimRoom) -> None:
    det = open_detector(backend=synced.usb_backend(), mode="8x8")
    gen = open_generator(port=synced.start_generator(), timeout_s=3.0)
    try:
        gen.set_technique(Technique(kvp=70, mas=2))
        gen.prepare()
        assert not det.status().exposure_ready
        with pytest.raises(GeneratorRefused, match="SYNC"):
            gen.expose()  # the panel is not integrating: EXP_REQ unanswered, no X-rays
        assert synced.pulses == [] and synced.panel.exp_requests == 1
        det.arm(FrameKind.EXPOSED, Trigger.SYNC)
        assert det.status().exposure_ready
        gen.prepare()
        readback = gen.expose()
        frame = det.read_frame(timeout_s=5)
        (kvp, mas, kerma), = synced.pulses
        assert readback.kvp == pytest.approx(kvp, abs=0.05)
        assert signal_ugy(synced, frame) == pytest.approx(kerma, rel=0.02)
        assert synced.panel.pulses_lost == 0 and not det.status().exposure_ready
    finally:
        gen.close()
        det.close()


def test_software_trigger_integrates_what_arrives_in_its_window(room: SimRoom, detector: UsbPanelDetector) -> None:
    detector.arm(FrameKind.EXPOSED, Trigger.SOFTWARE)
    assert not detector.status().exposure_ready  # a software arming answers no EXP_REQ
    assert room.deliver(70, 2) and room.panel.pulses_lost == 1  # before the window: not integrated
    detector.software_trigger(window_ms=300)
    room.deliver(70, 4)  # QA: the tube fired by hand inside the window
    frame = detector.read_frame(timeout_s=5)
    assert frame.meta.kind is FrameKind.EXPOSED
    assert signal_ugy(room, frame) == pytest.approx(kerma_at_detector_ugy(70, 4), rel=0.05)


def test_software_trigger_without_xrays_reads_out_when_the_window_closes(room: SimRoom,
                                                                         detector: UsbPanelDetector) -> None:
    detector.arm(FrameKind.EXPOSED, Trigger.SOFTWARE)
    detector.software_trigger(window_ms=50)
    frame = detector.read_frame(timeout_s=5)
    assert abs(signal_ugy(room, frame)) < 0.05  # an offset-level frame: calibration's dark at exposure timing


def test_automatic_exposure_detection_needs_no_generator_link(room: SimRoom, detector: UsbPanelDetector) -> None:
    detector.arm(FrameKind.EXPOSED, Trigger.AED)
    assert not detector.status().exposure_ready
    weak = kerma_at_detector_ugy(40, 0.1)
    assert weak < room.panel.aed_threshold_ugy
    room.deliver(40, 0.1)  # below the detection threshold: the panel does not notice
    assert room.panel.pulses_lost == 1 and room.panel.frames_read_out == 0
    fired = threading.Thread(target=room.deliver, args=(80, 2.5))  # a generator the host never talks to
    fired.start()
    frame = detector.read_frame(timeout_s=5)
    fired.join()
    assert signal_ugy(room, frame) == pytest.approx(kerma_at_detector_ugy(80, 2.5), rel=0.02)


def test_synchronised_hand_switch_through_the_simulator_process(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path / "sim").start("--modes", "8x8", "--seed", "7", "--sync-link")
    backend = registry.open_usb_backend("socket", path=sim.info["usb_socket"])
    gen = open_generator(port=sim.info["generator_port"], timeout_s=3.0)
    det: UsbPanelDetector = registry.open_detector("usb_panel", backend=backend, mode="8x8")
    try:
        gen.enable_hand_switch()  # released, but the panel is not integrating
        assert sim.call("press")["fired"] is False
        with pytest.raises(GeneratorRefused, match="SYNC"):
            gen.wait_hand_switch(5)
        det.arm(FrameKind.EXPOSED, Trigger.SYNC)
        gen.enable_hand_switch()
        assert sim.call("press")["fired"] is True
        readback = gen.wait_hand_switch(5)
        frame = det.read_frame(timeout_s=5)
        (kvp, _, _), = sim.call("pulses")["pulses"]
        assert readback is not None and readback.kvp == pytest.approx(kvp, abs=0.05)
        assert frame.meta.kind is FrameKind.EXPOSED and sim.call("status")["pulses_lost"] == 0
    finally:
        det.close()
        gen.close()
        backend.close()
        sim.stop()
