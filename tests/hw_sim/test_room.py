"""The simulated room: dose from technique, scene, lost pulses, the config factory."""

from __future__ import annotations

import os

import numpy as np
import pytest
import serial

from hw_sim.room import SimRoom, kerma_at_detector_ugy, open_room


def test_kerma_follows_the_technique() -> None:
    assert kerma_at_detector_ugy(70, 2) == pytest.approx(10.0)
    assert kerma_at_detector_ugy(80, 4) == pytest.approx(2 * kerma_at_detector_ugy(80, 2))
    assert kerma_at_detector_ugy(80, 2) > kerma_at_detector_ugy(70, 2)


def test_models_are_built_lazily_once_and_scenes_are_checked() -> None:
    with open_room(seed=5, modes=["8x8"]) as room:
        assert room.seed == 5 and room.panel.modes == ("8x8",)
        assert room.model("8x8") is room.model("8x8")
        room.place("chest")
        assert room.scene == "chest"
        with pytest.raises(ValueError, match="unknown scene 'knee'"):
            room.place("knee")
    with pytest.raises(ValueError, match="modes"):
        SimRoom(modes=("3x3",))


def test_a_pulse_while_the_panel_is_not_armed_is_lost() -> None:
    with SimRoom(modes=("8x8",)) as room:
        room.deliver(70, 2)
        assert room.panel.pulses_lost == 1
        assert room.panel.frames_read_out == 0


def test_the_chest_attenuates() -> None:
    with SimRoom(modes=("8x8",)) as room:
        model = room.model("8x8")
        open_field = model.frame(10.0, "open").mean()
        chest = model.frame(10.0, "chest").mean()
        assert chest < open_field
        assert np.isfinite(chest)


def test_generator_pty_answers_raw_sentences() -> None:
    with SimRoom(modes=("8x8",)) as room:
        path = room.start_generator()
        assert room.start_generator() == path and os.path.exists(path)
        with serial.Serial(path, 115200, timeout=2) as link:
            link.write(b"$PREP*00\r\n")  # wrong checksum
            assert link.read_until(b"\n").startswith(b"$ERR,CHECKSUM,")
            link.write(b"$FOO*46\r\n")
            assert link.read_until(b"\n").startswith(b"$ERR,SYNTAX,unknown command FOO")
            link.write(b"$PREP*17\r\n$EXPOSE*14\r\n")
            assert link.read_until(b"\n") == b"$READY*4B\r\n"
            assert link.read_until(b"\n").startswith(b"$DONE,")
        assert len(room.pulses) == 1


def test_room_fault_shortcuts_reach_the_panel() -> None:
    """Each shortcut changes what the panel sends, as seen through the real driver."""
    from drivers.usb_panel.driver import open_detector
    from gateway.errors import FrameError
    from gateway.types import FrameKind

    with SimRoom(modes=("8x8",)) as room:
        det = open_detector(backend=room.usb_backend(), mode="8x8", read_attempts=2)
        try:
            room.inject_crc_errors(2)  # both reads of the next frame corrupt
            det.arm(FrameKind.DARK)
            with pytest.raises(FrameError, match="CRC32 mismatch"):
                det.read_frame(5)
            sent = room.panel.transmissions
            room.truncate_frames(1, keep=0.25)  # one short transfer, then a good re-read
            det.arm(FrameKind.DARK)
            assert det.read_frame(5).pixels.shape == (384, 384)
            assert room.panel.transmissions - sent == 2
            room.skip_frame_number(1)
            det.arm(FrameKind.DARK)
            assert det.read_frame(5).meta.flags[0].startswith("frame counter gap")
        finally:
            det.close()
