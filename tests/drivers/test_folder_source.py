"""The vendor drop-folder driver with real files and real inotify events (watchdog): whole
frames only, bursts in order, the backlog of a stopped gateway at start, malformed pairs set
aside with a reason, nothing deleted before accept()."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from drivers.folder.source import FolderSource
from gateway.types import FrameKind

ROWS = COLS = 32


def pixels(i: int) -> np.ndarray:
    return (np.arange(ROWS * COLS, dtype=np.uint16).reshape(ROWS, COLS) + i * 7) % 4000


def sidecar(i: int, **over: object) -> bytes:
    doc: dict[str, object] = {"rows": ROWS, "columns": COLS, "bits_stored": 12, "pixel_spacing_mm": [0.15, 0.15],
                              "kind": "exposed", "detector_serial": "V-9", "frame_number": i,
                              "acquired_at": "2026-12-01T10:00:00Z",
                              "exposure": {"kvp": 70.0, "mas": 2.0 + i / 100, "exposure_time_ms": 10.0,
                                           "dap_dgy_cm2": 0.18}}
    doc.update(over)
    return json.dumps(doc).encode()


def drop(folder: Path, stem: str, i: int, *, raw: bytes | None = None, side: bytes | None = None) -> None:
    """Write as careful vendor software does: to a hidden temporary name, then rename into place."""
    for suffix, data in ((".raw", pixels(i).astype("<u2").tobytes() if raw is None else raw),
                         (".json", sidecar(i) if side is None else side)):
        tmp = folder / f".{stem}{suffix}.part"
        tmp.write_bytes(data)
        os.replace(tmp, folder / f"{stem}{suffix}")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "drop"
    d.mkdir()
    return d


@pytest.fixture
def source(folder: Path) -> Iterator[FolderSource]:
    with FolderSource(folder, stable_s=0.2, pair_timeout_s=1.0) as src:
        yield src


def test_a_renamed_pair_is_taken_with_its_exposure_data(folder: Path, source: FolderSource) -> None:
    drop(folder, "IMG00001", 1)
    frame = source.next_frame(5)
    assert frame is not None and frame.stem == "IMG00001"
    np.testing.assert_array_equal(frame.raw.pixels, pixels(1))
    assert (frame.raw.meta.kind, frame.raw.meta.detector_serial, frame.raw.meta.frame_number) == (
        FrameKind.EXPOSED, "V-9", 1)
    assert frame.exposure is not None and frame.exposure.mas == pytest.approx(2.01)
    assert (folder / "IMG00001.raw").exists()  # not moved before accept(): the image is not yet spooled
    source.accept(frame)
    assert not (folder / "IMG00001.raw").exists() and (folder / "taken" / "IMG00001.raw").exists()
    assert (folder / "taken" / "IMG00001.json").exists()


def test_a_file_written_in_place_is_taken_only_once_its_size_is_stable(folder: Path, source: FolderSource) -> None:
    (folder / "SLOW.json").write_bytes(sidecar(3))
    data = pixels(3).astype("<u2").tobytes()
    with open(folder / "SLOW.raw", "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        assert source.next_frame(0.1) is None  # half a frame: not taken
        fh.write(data[len(data) // 2:])
    frame = source.next_frame(5)
    assert frame is not None
    np.testing.assert_array_equal(frame.raw.pixels, pixels(3))  # whole, never half
    assert source.rejected == []


def test_a_burst_of_200_is_taken_in_order(folder: Path, source: FolderSource) -> None:
    for i in range(200):
        drop(folder, f"B{i:05d}", i)
    stems = []
    for _ in range(200):
        frame = source.next_frame(10)
        assert frame is not None
        np.testing.assert_array_equal(frame.raw.pixels, pixels(int(frame.stem[1:])))
        stems.append(frame.stem)
        source.accept(frame)
    assert stems == [f"B{i:05d}" for i in range(200)]
    assert len(list((folder / "taken").glob("*.raw"))) == 200 and source.next_frame(0.05) is None


def test_frames_that_arrived_while_down_are_taken_at_start(folder: Path) -> None:
    for i in (3, 1, 2):
        drop(folder, f"OLD{i}", i)
    with FolderSource(folder, stable_s=0.2, pair_timeout_s=1.0) as src:
        drop(folder, "NEW1", 9)
        got = []
        for _ in range(4):
            frame = src.next_frame(5)
            assert frame is not None
            got.append(frame.stem)
            src.accept(frame)
    assert got == ["OLD1", "OLD2", "OLD3", "NEW1"]


def test_an_unaccepted_frame_is_delivered_again_after_a_restart(folder: Path) -> None:
    drop(folder, "KEEP", 4)
    with FolderSource(folder, stable_s=0.2) as src:
        assert (frame := src.next_frame(5)) is not None and frame.stem == "KEEP"
        # the gateway dies before its image is in the spool: nothing was deleted or moved
    with FolderSource(folder, stable_s=0.2) as src:
        again = src.next_frame(5)
        assert again is not None and again.stem == "KEEP"
        np.testing.assert_array_equal(again.raw.pixels, pixels(4))


@pytest.mark.parametrize(("raw", "side", "reason"), [
    (b"\x00" * 10, None, "raw frame is 10 bytes; the sidecar's 32x32 uint16 needs 2048"),
    (None, b"{not json", "sidecar does not parse: document"),
    (None, sidecar(5, rows=0), "sidecar does not parse: rows: Input should be greater than or equal to 1"),
    (None, sidecar(5, colour="blue"), "sidecar does not parse: colour: Extra inputs are not permitted"),
    (np.full(ROWS * COLS, 5000, "<u2").tobytes(), None, "pixel value 5000 exceeds bits_stored 12"),
])
def test_a_malformed_pair_is_moved_aside_with_a_reason(folder: Path, source: FolderSource, raw: bytes | None,
                                                       side: bytes | None, reason: str) -> None:
    drop(folder, "BAD", 5, raw=raw, side=side)
    drop(folder, "GOOD", 6)
    frame = source.next_frame(5)
    assert frame is not None and frame.stem == "GOOD"  # the bad one does not block the queue
    assert (folder / "rejected" / "BAD.reason.txt").read_text().startswith(reason)
    assert (folder / "rejected" / "BAD.raw").exists() and (folder / "rejected" / "BAD.json").exists()


def test_a_raw_frame_without_its_sidecar_is_moved_aside_after_the_pair_timeout(folder: Path,
                                                                              source: FolderSource) -> None:
    tmp = folder / ".LONE.raw.part"
    tmp.write_bytes(pixels(1).astype("<u2").tobytes())
    os.replace(tmp, folder / "LONE.raw")
    drop(folder, "NEXT", 2)
    frame = source.next_frame(5)
    assert frame is not None and frame.stem == "NEXT"
    assert (folder / "rejected" / "LONE.reason.txt").read_text().startswith(
        "no sidecar (.json) within 1 s of its other half")
