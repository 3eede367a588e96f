"""Every byte of a generator sentence garbled: refused with the line named, never misread."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- property-based (hypothesis) ----------------------------------------------------------------

FIELD = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="$*,"),
                max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(FIELD, min_size=1, max_size=6).filter(lambda f: f[0] != "" or len(f) > 1))
def test_encode_then_decode_gives_the_fields_back(fields: list[str]) -> None:
    try:
        line = encode(*fields)
    except ValueError:
        assert len(",".join(fields)) + 6 > 82  # refused only for length
        return
    assert decode(line) == fields


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_are_a_sentence_error_or_a_checked_sentence(raw: bytes) -> None:
    try:
        fields = decode(raw)
    except SentenceError:
        return
    assert encode(*fields).upper() == raw.upper()  # only a real, checksummed sentence is believed


@settings(max_examples=300, deadline=None)
@given(st.lists(FIELD, min_size=1, max_size=5), st.data())
def test_a_burst_of_errors_in_a_sentence_is_caught(fields: list[str], data: st.DataObject) -> None:
    try:
        line = encode(*fields)
    except ValueError:
        return
    pos = data.draw(st.integers(0, len(line) - 3), label="position")  # not the CR LF
    xor = data.draw(st.integers(1, 255), label="xor")
    garbled = bytearray(line)
    garbled[pos] ^= xor
    try:
        got = decode(bytes(garbled))
    except SentenceError:
        return
    assert got == fields and bytes(garbled).upper() == line.upper()
