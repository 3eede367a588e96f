"""Sequences through the real driver: binned 1536 x 1536 at 15 frames/s from the simulator
process with none dropped or re-ordered; a slow consumer holds the panel back instead of losing
frames. (The 60 s figure is bench/panel_sequence.py's; this is its short version.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivers import registry
from drivers.usb_panel.driver import UsbPanelDetector
from gateway.types import FrameKind
from hw_sim.panel_readout import MAX_HELD
from hw_sim.room import SimRoom
from tests.service.processes import SimProcess

FPS = 15
SECONDS = 2


def test_binned_sequence_at_15_fps_from_the_simulator_process(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path / "sim").start("--modes", "2x2", "--seed", "11")
    backend = registry.open_usb_backend("socket", path=sim.info["usb_socket"])
    try:
        det: UsbPanelDetector = registry.open_detector("usb_panel", backend=backend, mode="2x2")
        try:
            frames = list(det.sequence(FPS * SECONDS, fps=FPS, kind=FrameKind.DARK))
        finally:
            det.close()
        truth = sim.call("status")
    finally:
        backend.close()
        sim.stop()
    numbers = [f.meta.frame_number for f in frames]
    assert numbers == list(range(1, FPS * SECONDS + 1))  # none dropped, none re-ordered, none doubled
    assert all(f.meta.flags == () and f.pixels.shape == (1536, 1536) for f in frames)
    assert (truth["frames_read_out"], truth["frames_held"]) == (FPS * SECONDS, 0)
    span = (frames[-1].meta.acquired_at - frames[0].meta.acquired_at).total_seconds()
    assert span >= (FPS * SECONDS - 1) / FPS * 0.95  # paced by the panel's clock, not a burst
    with SimRoom(seed=11, modes=("2x2",)) as twin:  # the same panel: its offset is what a dark frame shows
        model = twin.model("2x2")
        good = ~model.truth.defective
        offset = model.truth.offset[good].mean()
    for f in (frames[0], frames[-1]):
        assert abs(f.pixels[good].astype(np.float64).mean() - offset) < 1.0


def test_a_slow_consumer_back_pressures_the_panel_and_loses_nothing(room: SimRoom, detector: UsbPanelDetector) -> None:
    seq = detector.sequence(40, fps=500, kind=FrameKind.DARK)
    numbers = [next(seq).meta.frame_number]
    assert room.panel.held_back.wait(5)  # the consumer dawdles: the panel fills its buffer and waits
    assert (room.panel.frames_read_out, room.panel.frames_held) == (1 + MAX_HELD, MAX_HELD)
    numbers += [f.meta.frame_number for f in seq]
    assert numbers == list(range(1, 41))
    assert room.panel.frames_read_out == 40 and room.panel.frames_held == 0


def test_a_sequence_stopped_early_keeps_the_frames_already_read_out(room: SimRoom,
                                                                   detector: UsbPanelDetector) -> None:
    seq = detector.sequence(100, fps=500, kind=FrameKind.DARK)
    taken = [next(seq).meta.frame_number for _ in range(3)]
    assert room.panel.wait_frames_held(4, 5)
    seq.close()
    read_out = room.panel.frames_read_out
    kept = [f.meta.frame_number for f in detector.recovered]
    assert taken + kept == list(range(1, read_out + 1))  # every frame read out is delivered or kept
    assert room.panel.frames_held == 0 and detector.status().state == "idle"
    detector.arm(FrameKind.DARK)
    assert detector.read_frame(timeout_s=5).meta.frame_number == read_out + 1


def test_a_full_resolution_single_shot_through_the_socket_backend(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path / "sim").start("--modes", "1x1", "--seed", "4")
    backend = registry.open_usb_backend("socket", path=sim.info["usb_socket"])
    try:
        det: UsbPanelDetector = registry.open_detector("usb_panel", backend=backend, mode="1x1")
        try:
            det.arm(FrameKind.DARK)
            frame = det.read_frame(timeout_s=30)
        finally:
            det.close()
        truth = sim.call("status")
    finally:
        backend.close()
        sim.stop()
    assert frame.pixels.shape == (3072, 3072) and frame.meta.flags == ()
    assert (truth["frames_read_out"], truth["held_frame"]) == (1, None)
    with SimRoom(seed=4, modes=("1x1",)) as twin:
        model = twin.model("1x1")
        good = ~model.truth.defective
        assert abs(frame.pixels[good].astype(np.float64).mean() - model.truth.offset[good].mean()) < 0.5
