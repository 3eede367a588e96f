"""The real pyusb driver against the simulated panel (SimUsbBackend) — never a shortcut."""

from __future__ import annotations

import threading
import zlib
from datetime import UTC, datetime

import numpy as np
import pytest

from drivers.serial_generator.driver import SerialGenerator
from drivers.usb_panel.driver import UsbPanelDetector, open_detector
from gateway.errors import DeviceError, DeviceNotFound, FrameError
from gateway.ports import Detector
from gateway.types import FrameKind, Technique
from hw_sim.detector_model import MODES
from hw_sim.room import SimRoom
from hw_sim.usb_backend import SimUsbBackend


def test_identify_reports_the_panel(detector: UsbPanelDetector) -> None:
    info = detector.info
    assert isinstance(detector, Detector)
    assert (info.vendor, info.model, info.serial, info.firmware) == ("dxgate", "SimPanel 4343", "SIM-0001",
                                                                    "2.1.0")
    assert [m.name for m in info.modes] == ["8x8", "4x4"]
    m8 = info.mode("8x8")
    assert (m8.mode_id, m8.rows, m8.columns, m8.bits_stored) == (MODES["8x8"][0], 384, 384, 16)
    assert m8.pixel_spacing_mm == pytest.approx((1.112, 1.112))


def test_set_mode_changes_the_frame_geometry(room: SimRoom, detector: UsbPanelDetector) -> None:
    mode = detector.set_mode("4x4")
    assert (mode.name, mode.rows, mode.columns) == ("4x4", 768, 768)
    assert room.panel.mode == "4x4"
    detector.arm(FrameKind.DARK)
    frame = detector.read_frame(timeout_s=5)
    assert frame.pixels.shape == (768, 768)
    assert frame.meta.mode == "4x4"
    with pytest.raises(DeviceError, match=r"no readout mode '1x1' \(has: 8x8, 4x4\)"):
        detector.set_mode("1x1")


def test_dark_frame_matches_the_model(room: SimRoom, detector: UsbPanelDetector) -> None:
    detector.arm(FrameKind.DARK)
    frame = detector.read_frame(timeout_s=5)
    truth = room.model("8x8").truth
    assert frame.meta.kind is FrameKind.DARK
    assert frame.meta.frame_number == 1
    assert frame.meta.detector_serial == "SIM-0001"
    assert frame.meta.temperature_c == pytest.approx(30.0)
    assert frame.meta.crc32 == zlib.crc32(frame.pixels.astype("<u2").tobytes())
    assert not frame.pixels.flags.writeable
    good = ~truth.defective
    residual = frame.pixels[good].astype(np.float64) - truth.offset[good]
    assert abs(residual.mean()) < 0.5  # the offset map is what a dark frame shows
    assert residual.std() == pytest.approx(room.model("8x8").read_noise, rel=0.1)
    assert room.panel.held_frame is None  # ACKed


def test_frame_numbers_count_up_and_temperature_is_reported(room: SimRoom,
                                                            detector: UsbPanelDetector) -> None:
    numbers = []
    for _ in range(3):
        detector.arm(FrameKind.DARK)
        numbers.append(detector.read_frame(timeout_s=5).meta.frame_number)
    assert numbers == [1, 2, 3]
    room.set_temperature(33.5)
    assert detector.temperature_c() == pytest.approx(33.5)
    detector.arm(FrameKind.DARK)
    assert detector.read_frame(timeout_s=5).meta.temperature_c == pytest.approx(33.5)


def test_exposed_frame_reads_out_after_the_generator_fires(room: SimRoom, detector: UsbPanelDetector,
                                                           generator: SerialGenerator) -> None:
    accepted = generator.set_technique(Technique(kvp=70, mas=2))
    assert accepted == Technique(kvp=70.0, mas=2.0)
    detector.arm(FrameKind.EXPOSED)
    fired: list[object] = []

    def fire() -> None:  # the technologist presses the button while the driver waits for the frame
        generator.prepare()
        fired.append(generator.expose())

    t = threading.Thread(target=fire)
    t.start()
    frame = detector.read_frame(timeout_s=10)
    t.join(timeout=10)
    readback = fired[0]
    (kvp, mas, kerma), = room.pulses
    assert kerma == pytest.approx(10.0, rel=0.05)
    assert frame.meta.kind is FrameKind.EXPOSED
    model = room.model("8x8")
    good = ~model.truth.defective
    signal = frame.pixels[good].astype(np.float64) - model.truth.offset[good]
    assert signal.mean() == pytest.approx(model.counts_per_ugy * kerma, rel=0.01)
    assert readback.kvp == pytest.approx(kvp, abs=0.05)  # type: ignore[attr-defined]


def test_one_crc_error_is_cured_by_a_resend_with_identical_pixels(room: SimRoom,
                                                                  detector: UsbPanelDetector) -> None:
    with SimRoom(seed=7, modes=("8x8", "4x4")) as twin:  # same seed: same panel, same noise
        clean = open_detector(backend=twin.usb_backend(), mode="8x8")
        try:
            clean.arm(FrameKind.DARK)
            reference = clean.read_frame(timeout_s=5)
        finally:
            clean.close()
    room.panel.corrupt_crc(1)
    detector.arm(FrameKind.DARK)
    frame = detector.read_frame(timeout_s=5)
    assert room.panel.transmissions == 2  # the corrupt one and the resend
    np.testing.assert_array_equal(frame.pixels, reference.pixels)
    assert frame.meta.frame_number == 1


def test_persistent_crc_errors_never_become_a_frame(room: SimRoom, detector: UsbPanelDetector) -> None:
    room.panel.corrupt_crc(3)
    detector.arm(FrameKind.DARK)
    with pytest.raises(FrameError, match=r"frame 1: CRC32 mismatch \(header 0x[0-9a-f]{8}, payload "
                                         r"0x[0-9a-f]{8}\) after 3 reads"):
        detector.read_frame(timeout_s=5)
    assert room.panel.transmissions == 3
    assert room.panel.held_frame == 1  # never ACKed
    detector.arm(FrameKind.DARK)  # the room goes on with the next frame
    assert detector.read_frame(timeout_s=5).meta.frame_number == 2


def test_truncated_frame_is_reported_as_a_size_error(room: SimRoom) -> None:
    det = open_detector(backend=room.usb_backend(), mode="8x8", read_attempts=2)
    try:
        room.panel.truncate_next(2, keep=0.25)
        det.arm(FrameKind.DARK)
        with pytest.raises(FrameError, match=r"frame 1: size mismatch: payload 73728 bytes, header says "
                                             r"294912 .* after 2 reads"):
            det.read_frame(timeout_s=5)
        room.panel.truncate_next(1)  # once only: the resend brings the whole frame
        det.arm(FrameKind.DARK)
        assert det.read_frame(timeout_s=5).pixels.shape == (384, 384)
    finally:
        det.close()


def test_a_skipped_frame_number_is_reported_and_the_valid_frame_kept(room: SimRoom,
                                                                      detector: UsbPanelDetector) -> None:
    detector.arm(FrameKind.DARK)
    assert detector.read_frame(timeout_s=5).meta.frame_number == 1
    room.panel.skip_frame_number(1)
    detector.arm(FrameKind.DARK)
    frame = detector.read_frame(timeout_s=5)
    # the frame passed its CRCs: it may carry a dose, so it is delivered, with the gap reported
    assert frame.meta.frame_number == 3
    assert frame.meta.flags == ("frame counter gap: expected frame 2, got 3 (1 frame(s) missed before it)",)
    assert room.panel.held_frame is None  # ACKed: the host has it
    detector.arm(FrameKind.DARK)
    nxt = detector.read_frame(timeout_s=5)
    assert (nxt.meta.frame_number, nxt.meta.flags) == (4, ())


def test_a_device_timestamp_out_of_range_is_flagged_not_fatal(room: SimRoom, detector: UsbPanelDetector) -> None:
    room.panel.set_timestamp_us(2**64 - 1)  # a valid CRC over an absurd clock
    detector.arm(FrameKind.DARK)
    before = datetime.now(UTC)
    frame = detector.read_frame(timeout_s=5)
    assert frame.meta.flags == (f"device timestamp {2**64 - 1} us is out of range; host receive time used",)
    assert before <= frame.meta.acquired_at <= datetime.now(UTC)
    room.panel.set_timestamp_us(None)
    detector.arm(FrameKind.DARK)
    assert detector.read_frame(timeout_s=5).meta.flags == ()


def test_no_xray_means_a_clear_timeout(room: SimRoom, detector: UsbPanelDetector) -> None:
    detector.arm(FrameKind.EXPOSED)
    with pytest.raises(DeviceError, match=r"no frame from panel SIM-0001 within 0.3 s \(armed exposed; "
                                          r"no X-ray pulse arrived\)") as err:
        detector.read_frame(timeout_s=0.3)
    assert not isinstance(err.value, FrameError)


def test_read_without_arm_is_refused(detector: UsbPanelDetector) -> None:
    with pytest.raises(DeviceError, match="without arm"):
        detector.read_frame(timeout_s=0.1)


def test_unknown_serial_is_not_found(room: SimRoom) -> None:
    with pytest.raises(DeviceNotFound, match=r"no USB panel 1209:0001 serial 'NOPE' \(found: SIM-0001\)"):
        open_detector(backend=room.usb_backend(), serial="NOPE", mode="8x8")
    with pytest.raises(DeviceNotFound, match=r"1209:0001 \(no device with that VID:PID attached\)"):
        open_detector(backend=SimUsbBackend(), mode="8x8")


def test_the_panel_is_chosen_by_serial_among_several() -> None:
    with SimRoom(seed=1, serial="SIM-A", modes=("8x8",)) as a, \
            SimRoom(seed=2, serial="SIM-B", modes=("8x8",)) as b:
        bus = SimUsbBackend([a.panel, b.panel])
        det = open_detector(backend=bus, serial="SIM-B", mode="8x8")
        try:
            assert det.info.serial == "SIM-B"
            det.arm(FrameKind.DARK)
            det.read_frame(timeout_s=5)
            assert (a.panel.frames_read_out, b.panel.frames_read_out) == (0, 1)
        finally:
            det.close()


def test_a_claimed_panel_cannot_be_opened_twice(room: SimRoom, detector: UsbPanelDetector) -> None:
    with pytest.raises(DeviceError, match="cannot claim USB panel 1209:0001.*busy"):
        open_detector(backend=room.usb_backend(), mode="8x8")


def test_unplugged_panel_is_a_device_error(room: SimRoom, detector: UsbPanelDetector) -> None:
    room.usb_backend().unplug("SIM-0001")
    with pytest.raises(DeviceError, match="No such device"):
        detector.arm(FrameKind.DARK)


def test_a_refused_request_says_why(detector: UsbPanelDetector) -> None:
    detector.arm(FrameKind.EXPOSED)
    with pytest.raises(DeviceError, match=r"SET_MODE wValue=2 refused: .*Pipe error.*\(device error BUSY\)"):
        detector.set_mode("4x4")
