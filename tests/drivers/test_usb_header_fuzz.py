"""Every byte of the frame header corrupted on the wire: re-read or refused, never believed.

The header's fields (frame number, kind, temperature, timestamp) go into the image's
metadata, so a flipped bit anywhere in it must be caught like a corrupt payload.
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.usb_panel.driver import UsbPanelDetector, open_detector
from gateway.errors import FrameError
from gateway.types import FrameKind, RawFrame
from hw_sim.room import SimRoom
from tests.drivers.conftest import TEST_MODES

HEADER_BYTES = range(64)
FLIPS = (0x01, 0x80)


@pytest.fixture(scope="module")
def reference_frames() -> list[RawFrame]:
    """What a clean panel of the same seed reads out, frame after frame."""
    with SimRoom(seed=7, modes=TEST_MODES) as twin:
        det = open_detector(backend=twin.usb_backend(), mode="8x8")
        try:
            frames = []
            for _ in range(len(HEADER_BYTES) * len(FLIPS)):
                det.arm(FrameKind.DARK)
                frames.append(det.read_frame(timeout_s=5))
            return frames
        finally:
            det.close()


def test_one_corrupt_header_is_reread_to_the_true_frame(room: SimRoom, detector: UsbPanelDetector,
                                                        reference_frames: list[RawFrame]) -> None:
    n = 0
    for offset in HEADER_BYTES:
        for xor in FLIPS:
            room.panel.mangle_header(offset, xor)
            sent_before = room.panel.transmissions
            detector.arm(FrameKind.DARK)
            frame = detector.read_frame(timeout_s=5)
            ref = reference_frames[n]
            assert room.panel.transmissions - sent_before == 2, f"byte {offset} ^ {xor:#x} was believed"
            assert frame.meta.frame_number == ref.meta.frame_number
            assert frame.meta.temperature_c == ref.meta.temperature_c and frame.meta.kind is ref.meta.kind
            np.testing.assert_array_equal(frame.pixels, ref.pixels)
            n += 1


@pytest.mark.parametrize("offset", [8, 17, 20, 24, 36, 50, 60])  # number, kind, temperature, time, CRCs, reserved
def test_a_header_that_stays_corrupt_is_refused(room: SimRoom, offset: int) -> None:
    det = open_detector(backend=room.usb_backend(), mode="8x8", read_attempts=3)
    try:
        room.panel.mangle_header(offset, 0x04, n=3)
        det.arm(FrameKind.DARK)
        with pytest.raises(FrameError, match="header CRC32 mismatch.*after 3 reads"):
            det.read_frame(timeout_s=5)
        det.arm(FrameKind.DARK)  # the panel goes on: the next frame is read normally
        assert det.read_frame(timeout_s=5).meta.frame_number == 2
    finally:
        det.close()
