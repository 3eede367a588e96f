"""The simulated panel's side of the USB wire format (docs/detector-protocol.md).

Written independently of drivers/usb_panel/protocol.py on purpose: the driver tests then
cross-check both readings of the document, as a real device and its driver would.
"""

from __future__ import annotations

import logging
import struct
import zlib

LOGGER = logging.getLogger(__name__)

VENDOR_ID = 0x1209
PRODUCT_ID = 0x0001
BULK_IN = 0x81
MAX_PACKET = 512
LANGID_EN_US = 0x0409

# Vendor requests (bRequest).
IDENTIFY, SET_MODE, ARM, STATUS, ACK, RESEND, DISARM = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
TRIGGER, START_SEQUENCE = 0x08, 0x09  # protocol version 2
PROTOCOL_VERSION = 2
# STATUS state and last-error codes.
IDLE, ARMED, HOLDING = 0, 1, 2
E_NONE, E_BAD_REQUEST, E_BAD_MODE, E_BAD_KIND, E_NO_FRAME, E_WRONG_FRAME, E_BUSY, E_OVER_TEMPERATURE = range(8)
# ARM wValue: dark, exposed synchronised (EXP_REQ/EXP_OK), software trigger, automatic exposure detection.
KIND_DARK, KIND_EXPOSED, KIND_SOFTWARE, KIND_AED = 0, 1, 2, 3
FLAG_OVER_TEMPERATURE, FLAG_WIRELESS, FLAG_SEQUENCE, FLAG_EXP_OK = 0x01, 0x02, 0x04, 0x08
NOT_REPORTED = 0xFF  # battery / link quality of a cabled panel
SEQUENCE_STRUCT = struct.Struct("<IIB")  # START_SEQUENCE data: frame count, period (us), kind

_HEADER = struct.Struct("<4sHHIHHBBHhxxQII20xI")
HEADER_SIZE = _HEADER.size


def frame_header(*, frame_number: int, rows: int, columns: int, bits: int, kind: int, mode_id: int,
                 temperature_c: float, timestamp_us: int, payload_length: int, crc32: int) -> bytes:
    raw = _HEADER.pack(b"DXFR", 1, HEADER_SIZE, frame_number & 0xFFFFFFFF, rows, columns, bits, kind,
                       mode_id, round(temperature_c * 100), timestamp_us, payload_length, crc32, 0)
    return raw[:60] + struct.pack("<I", zlib.crc32(raw[:60]))


def status_record(*, state: int, last_error: int, mode_id: int, last_frame: int,
                  temperature_c: float, flags: int = 0, battery: int | None = None, link: int | None = None,
                  held: int = 0) -> bytes:
    """Version 2 fills the bytes version 1 reserved: flags, battery, link, frames held, version."""
    return struct.pack("<BBHIhBBBBBx", state, last_error, mode_id, last_frame & 0xFFFFFFFF,
                       round(temperature_c * 100), flags, NOT_REPORTED if battery is None else battery,
                       NOT_REPORTED if link is None else link, min(held, 255), PROTOCOL_VERSION)


def _text(s: str) -> bytes:
    raw = s.encode("utf-8")[:255]
    return bytes([len(raw)]) + raw


def identify_record(*, vendor: str, model: str, serial: str, firmware: str,
                    modes: list[tuple[int, str, int, int, float, int]]) -> bytes:
    """modes: (mode id, name, rows, columns, pixel spacing mm, bits)."""
    out = bytearray([1]) + _text(vendor) + _text(model) + _text(serial) + _text(firmware)
    out.append(len(modes))
    for mode_id, name, rows, cols, spacing_mm, bits in modes:
        nm = round(spacing_mm * 1e6)
        out += bytes([mode_id]) + _text(name) + struct.pack("<HHIIB", rows, cols, nm, nm, bits)
    return bytes(out)


def string_descriptor(text: str) -> bytes:
    raw = text.encode("utf-16-le")
    return bytes([2 + len(raw), 0x03]) + raw


def langid_descriptor() -> bytes:
    return bytes([4, 0x03]) + struct.pack("<H", LANGID_EN_US)
