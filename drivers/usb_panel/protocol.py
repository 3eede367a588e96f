"""Wire format of the USB panel protocol: constants and pure encoders/decoders, no I/O.

See docs/detector-protocol.md for the byte tables this module implements.
"""

from __future__ import annotations

import enum
import logging
import struct
import zlib
from dataclasses import dataclass

from gateway.types import FrameKind, ReadoutMode

LOGGER = logging.getLogger(__name__)

VENDOR_ID = 0x1209
PRODUCT_ID = 0x0001
INTERFACE = 0
BULK_IN = 0x81
MAX_PACKET = 512

REQ_IN = 0xC0  # vendor | device | device-to-host
REQ_OUT = 0x40  # vendor | device | host-to-device
IDENTIFY_MAX = 1024


class Request(enum.IntEnum):
    IDENTIFY = 0x01
    SET_MODE = 0x02
    ARM = 0x03
    STATUS = 0x04
    ACK = 0x05
    RESEND = 0x06
    DISARM = 0x07
    TRIGGER = 0x08  # version 2
    START_SEQUENCE = 0x09  # version 2


class State(enum.IntEnum):
    IDLE = 0
    ARMED = 1
    HOLDING = 2


class DeviceErrorCode(enum.IntEnum):
    NONE = 0
    BAD_REQUEST = 1
    BAD_MODE = 2
    BAD_KIND = 3
    NO_FRAME = 4
    WRONG_FRAME = 5
    BUSY = 6
    OVER_TEMPERATURE = 7  # version 2


class Trigger(enum.IntEnum):
    """ARM wValue for an exposed frame (version 2; a version-1 panel knows SYNC as "exposed")."""

    SYNC = 1  # synchronised: EXP_REQ from the generator is answered EXP_OK while integrating
    SOFTWARE = 2  # the host's TRIGGER request opens an integration window
    AED = 3  # automatic exposure detection: the panel notices the X-ray onset, no generator link


FLAG_OVER_TEMPERATURE, FLAG_WIRELESS, FLAG_SEQUENCE, FLAG_EXP_OK = 0x01, 0x02, 0x04, 0x08
NOT_REPORTED = 0xFF
SEQUENCE_STRUCT = struct.Struct("<IIB")  # START_SEQUENCE data stage: count, period (us), kind


KIND_CODES: dict[FrameKind, int] = {FrameKind.DARK: 0, FrameKind.EXPOSED: 1}
KINDS_BY_CODE: dict[int, FrameKind] = {v: k for k, v in KIND_CODES.items()}

MAGIC = b"DXFR"
HEADER_VERSION = 1
HEADER_STRUCT = struct.Struct("<4sHHIHHBBHhxxQII20xI")
HEADER_SIZE = HEADER_STRUCT.size  # 64
HEADER_CRC_SPAN = 60  # the header CRC32 (last 4 bytes) covers bytes 0..59
STATUS_STRUCT = struct.Struct("<BBHIh6x")  # version 1: what every host reads
STATUS_V2_TAIL = struct.Struct("<BBBBB")  # version 2, in bytes 10..14 that version 1 reserved


class ProtocolError(ValueError):
    """Bytes that do not follow the wire format (the driver turns this into a DeviceError)."""


@dataclass(frozen=True)
class FrameHeader:
    magic: bytes
    version: int
    header_size: int
    frame_number: int
    rows: int
    columns: int
    bits_stored: int
    kind_code: int
    mode_id: int
    temperature_centi_c: int
    timestamp_us: int
    payload_length: int
    payload_crc32: int
    header_crc32: int = 0  # as received; pack_header computes it

    @property
    def temperature_c(self) -> float:
        return self.temperature_centi_c / 100.0


def header_crc32(raw: bytes | memoryview) -> int:
    """CRC-32 of the header fields: temperature, timestamp, kind... are not in the payload CRC."""
    return zlib.crc32(raw[:HEADER_CRC_SPAN])


def pack_header(h: FrameHeader) -> bytes:
    raw = HEADER_STRUCT.pack(h.magic, h.version, h.header_size, h.frame_number, h.rows, h.columns,
                             h.bits_stored, h.kind_code, h.mode_id, h.temperature_centi_c,
                             h.timestamp_us, h.payload_length, h.payload_crc32, 0)
    return raw[:HEADER_CRC_SPAN] + struct.pack("<I", header_crc32(raw))


def unpack_header(data: bytes | memoryview) -> FrameHeader:
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"frame header is {len(data)} bytes, expected {HEADER_SIZE}")
    return FrameHeader(*HEADER_STRUCT.unpack(data))


@dataclass(frozen=True)
class Status:
    state: State | int
    last_error: DeviceErrorCode | int
    mode_id: int
    last_frame_number: int
    temperature_centi_c: int
    flags: int = 0
    battery_percent: int | None = None
    link_quality_percent: int | None = None
    frames_held: int = 0
    protocol_version: int = 1

    @property
    def temperature_c(self) -> float:
        return self.temperature_centi_c / 100.0

    @property
    def over_temperature(self) -> bool:
        return bool(self.flags & FLAG_OVER_TEMPERATURE)

    @property
    def exposure_ready(self) -> bool:
        """EXP_OK: integrating for a synchronised exposure, the generator may fire."""
        return bool(self.flags & FLAG_EXP_OK)


def unpack_status(data: bytes) -> Status:
    """Version 1 fields always; the version-2 tail when the panel says it is version 2
    (a version-1 panel sends zeros there)."""
    if len(data) != STATUS_STRUCT.size:
        raise ProtocolError(f"STATUS reply is {len(data)} bytes, expected {STATUS_STRUCT.size}")
    state, err, mode_id, last, temp = STATUS_STRUCT.unpack(data)
    flags, battery, link, held, version = STATUS_V2_TAIL.unpack_from(data, 10)
    st = _enum_or_int(State, state)
    if version < 2:
        return Status(st, _enum_or_int(DeviceErrorCode, err), mode_id, last, temp,
                      frames_held=1 if st == State.HOLDING else 0)
    return Status(st, _enum_or_int(DeviceErrorCode, err), mode_id, last, temp, flags=flags,
                  battery_percent=None if battery == NOT_REPORTED else battery,
                  link_quality_percent=None if link == NOT_REPORTED else link,
                  frames_held=held, protocol_version=version)


def _enum_or_int(cls: type[enum.IntEnum], value: int) -> enum.IntEnum | int:
    try:
        return cls(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class Identity:
    vendor: str
    model: str
    serial: str
    firmware: str
    modes: tuple[ReadoutMode, ...]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, fmt: str) -> tuple[int, ...]:
        s = struct.Struct("<" + fmt)
        if self._pos + s.size > len(self._data):
            raise ProtocolError(f"IDENTIFY record truncated at byte {self._pos} of {len(self._data)}")
        values = s.unpack_from(self._data, self._pos)
        self._pos += s.size
        return values

    def text(self) -> str:
        (n,) = self.take("B")
        if self._pos + n > len(self._data):
            raise ProtocolError(f"IDENTIFY record truncated in a string at byte {self._pos}")
        raw = self._data[self._pos:self._pos + n]
        self._pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"IDENTIFY string at byte {self._pos - n} is not UTF-8") from exc


def unpack_identity(data: bytes) -> Identity:
    r = _Reader(data)
    (version,) = r.take("B")
    if version != 1:
        raise ProtocolError(f"IDENTIFY record version {version} not supported (expected 1)")
    vendor, model, serial, firmware = r.text(), r.text(), r.text(), r.text()
    (count,) = r.take("B")
    modes = []
    for _ in range(count):
        (mode_id,) = r.take("B")
        name = r.text()
        rows, cols, row_nm, col_nm, bits = r.take("HHIIB")
        modes.append(ReadoutMode(mode_id=mode_id, name=name, rows=rows, columns=cols,
                                 pixel_spacing_mm=(row_nm / 1e6, col_nm / 1e6), bits_stored=bits))
    return Identity(vendor, model, serial, firmware, tuple(modes))


def pack_identity(ident: Identity) -> bytes:
    """The device side of IDENTIFY; used by tests and tools (the simulator has its own)."""

    def text(s: str) -> bytes:
        raw = s.encode("utf-8")
        if len(raw) > 255:
            raise ValueError(f"string too long for IDENTIFY: {s[:40]!r}...")
        return bytes([len(raw)]) + raw

    out = bytearray([1])
    for s in (ident.vendor, ident.model, ident.serial, ident.firmware):
        out += text(s)
    out.append(len(ident.modes))
    for m in ident.modes:
        out.append(m.mode_id)
        out += text(m.name)
        out += struct.pack("<HHIIB", m.rows, m.columns, round(m.pixel_spacing_mm[0] * 1e6),
                           round(m.pixel_spacing_mm[1] * 1e6), m.bits_stored)
    return bytes(out)
