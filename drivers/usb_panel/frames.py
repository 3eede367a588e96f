"""One frame off the wire: header and payload read, checked against the mode and both CRCs."""

from __future__ import annotations

import array
import time
import zlib
from datetime import UTC, datetime

import numpy as np

from drivers.usb_panel import protocol as p
from drivers.usb_panel.link import BadTransmission, PanelLink
from gateway.types import FrameKind, ReadoutMode

# A device clock outside these years is wrong (unset RTC, a corrupt field that still passed
# the CRC); the host's receive time stands in, and the frame says so.
DEVICE_YEARS = (2000, 2999)


def device_time(timestamp_us: int) -> tuple[datetime, str]:
    """The frame's device timestamp as a UTC datetime, or the host's time and the reason."""
    try:
        when = datetime.fromtimestamp(timestamp_us / 1e6, tz=UTC)
    except (OverflowError, OSError, ValueError):
        when = None
    if when is None or not DEVICE_YEARS[0] <= when.year <= DEVICE_YEARS[1]:
        return datetime.now(UTC), f"device timestamp {timestamp_us} us is out of range; host receive time used"
    return when, ""


def _buffer(size: int) -> array.array:
    """A zeroed byte buffer for pyusb to read into, made in one allocation (a frame is megabytes)."""
    return array.array("B", b"\0") * size


def read_transmission(link: PanelLink, mode: ReadoutMode, serial: str, kind: FrameKind, *, deadline: float,
                      timeout_s: float, payload_timeout_s: float) -> tuple[p.FrameHeader, np.ndarray]:
    """The frame in transit: BadTransmission when a RESEND may cure what arrived."""
    hbuf = _buffer(p.MAX_PACKET)
    n = link.bulk_read(hbuf, max(deadline - time.monotonic(), 0.001),
                       lambda: f"no frame from panel {serial} within {timeout_s:g} s "
                               f"(armed {kind.value}"
                               + ("; no X-ray pulse arrived)" if kind is FrameKind.EXPOSED else ")"))
    if n != p.HEADER_SIZE:
        raise BadTransmission(None, f"frame header of {n} bytes, expected {p.HEADER_SIZE}")
    header = p.unpack_header(memoryview(hbuf)[:n])
    if p.header_crc32(memoryview(hbuf)[:n]) != header.header_crc32:
        raise BadTransmission(None, "header CRC32 mismatch (header fields corrupt in transit)")
    check_header(header, mode)
    payload = _buffer(header.payload_length)
    got = link.bulk_read(payload, max(deadline - time.monotonic(), payload_timeout_s),
                         None, frame_number=header.frame_number)
    if got != header.payload_length:
        raise BadTransmission(header.frame_number, f"size mismatch: payload {got} bytes, header "
                              f"says {header.payload_length} (short transfer)")
    crc = zlib.crc32(payload)
    if crc != header.payload_crc32:
        raise BadTransmission(header.frame_number, f"CRC32 mismatch (header "
                              f"0x{header.payload_crc32:08x}, payload 0x{crc:08x})")
    pixels = np.frombuffer(payload, dtype="<u2").reshape(header.rows, header.columns)
    return header, pixels.astype(np.uint16, copy=False)


def check_header(h: p.FrameHeader, mode: ReadoutMode) -> None:
    n = h.frame_number
    if h.magic != p.MAGIC:
        raise BadTransmission(None, f"bad frame magic {h.magic!r} (expected {p.MAGIC!r})")
    if h.version != p.HEADER_VERSION or h.header_size != p.HEADER_SIZE:
        raise BadTransmission(n, f"frame header version {h.version} size {h.header_size} not "
                                 f"supported (expected {p.HEADER_VERSION}/{p.HEADER_SIZE})")
    if (h.rows, h.columns, h.mode_id) != (mode.rows, mode.columns, mode.mode_id):
        raise BadTransmission(n, f"size mismatch: header {h.rows}x{h.columns} mode id {h.mode_id}, "
                                 f"mode {mode.name} is {mode.rows}x{mode.columns} id {mode.mode_id}")
    if h.payload_length != h.rows * h.columns * 2:
        raise BadTransmission(n, f"size mismatch: header payload length {h.payload_length} != "
                                 f"{h.rows}*{h.columns}*2")
    if h.kind_code not in p.KINDS_BY_CODE or h.bits_stored != mode.bits_stored:
        raise BadTransmission(n, f"bad header: kind {h.kind_code}, bits {h.bits_stored}")
