"""The driver's reading of docs/detector-protocol.md against the simulator's independent one."""

from __future__ import annotations

import struct
import zlib

from drivers.usb_panel import protocol as p
from gateway.types import ReadoutMode
from hw_sim import usb_wire as w


def test_header_layout_matches_the_table() -> None:
    raw = w.frame_header(frame_number=0x01020304, rows=384, columns=256, bits=16, kind=1, mode_id=3,
                         temperature_c=-1.25, timestamp_us=1_700_000_000_000_000,
                         payload_length=384 * 256 * 2, crc32=0xDEADBEEF)
    assert len(raw) == p.HEADER_SIZE == 64
    assert raw[0:4] == b"DXFR"
    assert struct.unpack_from("<HHI", raw, 4) == (1, 64, 0x01020304)
    assert struct.unpack_from("<HHBBHh", raw, 12) == (384, 256, 16, 1, 3, -125)
    assert struct.unpack_from("<QII", raw, 24) == (1_700_000_000_000_000, 196608, 0xDEADBEEF)
    assert raw[40:60] == bytes(20) and raw[22:24] == bytes(2)
    assert struct.unpack_from("<I", raw, 60) == (zlib.crc32(raw[:60]),)
    h = p.unpack_header(raw)
    assert (h.frame_number, h.rows, h.columns, h.kind_code, h.mode_id) == (0x01020304, 384, 256, 1, 3)
    assert h.temperature_c == -1.25 and h.payload_crc32 == 0xDEADBEEF
    assert p.pack_header(h) == raw


def test_identify_and_status_records_agree() -> None:
    device = w.identify_record(vendor="Acme", model="P1", serial="S1", firmware="2.1",
                               modes=[(3, "8x8", 384, 384, 1.112, 16), (2, "4x4", 768, 768, 0.556, 16)])
    ident = p.unpack_identity(device)
    assert ident.modes[0] == ReadoutMode(3, "8x8", 384, 384, (1.112, 1.112), 16)
    assert p.pack_identity(ident) == device
    status = p.unpack_status(w.status_record(state=w.HOLDING, last_error=w.E_WRONG_FRAME, mode_id=2,
                                             last_frame=42, temperature_c=31.07))
    assert status == p.Status(p.State.HOLDING, p.DeviceErrorCode.WRONG_FRAME, 2, 42, 3107, frames_held=0,
                              protocol_version=2)


def test_status_version_2_fills_only_what_version_1_reserved() -> None:
    raw = w.status_record(state=w.ARMED, last_error=w.E_OVER_TEMPERATURE, mode_id=1, last_frame=7,
                          temperature_c=46.5, flags=w.FLAG_OVER_TEMPERATURE | w.FLAG_WIRELESS, battery=64,
                          link=80, held=3)
    # a version-1 host's check: the same 16 bytes, the same first five fields, the rest ignored
    v1_state, v1_err, v1_mode, v1_last, v1_temp = struct.unpack("<BBHIh6x", raw)
    assert (v1_state, v1_mode, v1_last, v1_temp) == (w.ARMED, 1, 7, 4650)
    status = p.unpack_status(raw)
    assert (status.over_temperature, status.battery_percent, status.link_quality_percent, status.frames_held,
            status.protocol_version, status.last_error) == (True, 64, 80, 3, 2, p.DeviceErrorCode.OVER_TEMPERATURE)
    cabled = p.unpack_status(w.status_record(state=w.IDLE, last_error=0, mode_id=1, last_frame=7,
                                             temperature_c=30))
    assert (cabled.battery_percent, cabled.link_quality_percent) == (None, None)
    v1_panel = p.unpack_status(struct.pack("<BBHIh6x", w.HOLDING, 0, 1, 9, 3000))  # zeros where v2 reports
    assert (v1_panel.protocol_version, v1_panel.frames_held, v1_panel.battery_percent,
            v1_panel.over_temperature) == (1, 1, None, False)


def test_request_and_state_codes_agree() -> None:
    assert [int(r) for r in p.Request] == [w.IDENTIFY, w.SET_MODE, w.ARM, w.STATUS, w.ACK, w.RESEND, w.DISARM,
                                           w.TRIGGER, w.START_SEQUENCE]
    assert [int(t) for t in p.Trigger] == [w.KIND_EXPOSED, w.KIND_SOFTWARE, w.KIND_AED]
    assert p.SEQUENCE_STRUCT.format == w.SEQUENCE_STRUCT.format
    assert [int(s) for s in p.State] == [w.IDLE, w.ARMED, w.HOLDING]
    assert (p.VENDOR_ID, p.PRODUCT_ID, p.BULK_IN, p.MAX_PACKET) == (w.VENDOR_ID, w.PRODUCT_ID, w.BULK_IN,
                                                                   w.MAX_PACKET)
