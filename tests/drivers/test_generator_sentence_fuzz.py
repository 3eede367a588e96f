"""Every byte of a generator sentence garbled: refused with the line named, never misread."""

from __future__ import annotations

import pytest

from drivers.serial_generator.protocol import SentenceError, decode, encode

SENTENCES = [encode("DONE", "kv=70.1", "mas=2.01", "ms=25.0", "dap=0.123"), encode("READY"),
             encode("ERR", "INTERLOCK", "door open"), encode("OK", "TECH", "kv=120.0", "mas=0.50")]


@pytest.mark.parametrize("line", SENTENCES, ids=lambda s: s.decode().split(",")[0].strip("$\r\n"))
def test_any_single_garbled_byte_is_refused_or_harmless(line: bytes) -> None:
    fields = decode(line)
    for pos in range(len(line)):
        for xor in (0x01, 0x02, 0x20, 0x40, 0x80):
            garbled = bytearray(line)
            garbled[pos] ^= xor
            try:
                got = decode(bytes(garbled))
            except SentenceError as exc:
                assert "line" in str(exc) and len(str(exc)) < 200  # names the line, briefly
                continue
            # only the checksum's hex letter case may change without changing the meaning
            assert got == fields and bytes(garbled).upper() == line.upper(), (pos, xor, bytes(garbled))


def test_noise_and_overlong_lines_are_refused() -> None:
    for raw in (b"", b"\r\n", b"$*00\r\n", b"\xff\xfe\r\n", b"$" + b"A" * 500 + b"*00\r\n", b"READY\r\n"):
        with pytest.raises(SentenceError):
            decode(raw)
