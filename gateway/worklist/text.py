"""Text from the RIS: decoded with confidence, or refused — never guessed.

A worklist answer's strings are decoded with pydicom's own character set handling
(`pydicom.charset`), honouring the answer's Specific Character Set, ISO 2022 code extensions
included ('ISO 2022 IR 6\\ISO 2022 IR 149': escape sequences switch to Korean and back). What
dxgate keeps is Unicode, written later as UTF-8 (ISO_IR 192), so no escape sequence and no
control character may survive the decoding. Refused, with `UndecodableText` naming the reason
and never the text (it is patient data):

- non-ASCII bytes where no character set is declared (or only the default repertoire,
  ISO_IR 6): the bytes could be Latin-1, UTF-8 or anything else, and a guess is mojibake;
- an ESC byte in a value whose character set has no code extensions (ISO_IR 192 above all:
  a server that converted ISO 2022 text to UTF-8 but kept its escape sequences);
- an escape sequence that designates a character set the answer did not declare;
- bytes that are not valid in the declared character set (invalid UTF-8 for ISO_IR 192);
- a character set that is unknown, misspelled or an illegal combination;
- a decoded value still holding ESC, another C0 or C1 control character, DEL or U+FFFD (the
  mark of text already lost in an earlier conversion), or what is left of a multi-byte ISO 2022
  designator whose ESC byte a converter dropped ("$)C": Orthanc 1.10 turns Korean into that).

pydicom itself decodes leniently (a warning, then replacement characters or Latin-1): every
case where it would is checked first, with the same codecs and the same fragments, so that its
decoding here never needs to fall back; no process-wide warnings filter or pydicom setting is
touched, so other threads are not affected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydicom.charset import CODES_TO_ENCODINGS, convert_encodings, decode_bytes, default_encoding, handled_encodings
from pydicom.charset import python_encoding as PYTHON_ENCODING
from pydicom.values import TEXT_VR_DELIMS

ESC = b"\x1b"
# decoded with the Specific Character Set
TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})
# one value that may hold a backslash and formatting characters (PS3.5 6.2)
UNSPLIT_VRS = frozenset({"LT", "ST", "UT"})
_FORMAT_CONTROLS = frozenset("\t\n\f\r")
# pydicom's codec for the default repertoire (ISO_IR 6) is Latin-1, which decodes anything:
# under it, only ASCII is text
_ASCII_ONLY = default_encoding
_FRAGMENTS = re.compile(b"(^[^\x1b]+|[\x1b][^\x1b]*)")  # as pydicom.charset.decode_bytes splits
# what a converter that dropped the ESC byte leaves of a multi-byte designator ("$)C" for Korean:
# Orthanc 1.10 answers 'ISO 2022 IR 6\ISO 2022 IR 149' text so, its Hangul gone); never text
_DESIGNATOR_REMAINS = tuple(sorted(code[1:].decode("ascii") for code in CODES_TO_ENCODINGS if len(code) == 4))


class UndecodableText(ValueError):
    """Text that cannot be decoded with confidence. The message is a predicate ("holds control
    characters") naming the reason, never the text."""


_UNSURE = "cannot be decoded with confidence"


@dataclass(frozen=True)
class CharacterSet:
    """A Specific Character Set (0008,0005) that pydicom can decode without guessing."""

    terms: tuple[str, ...]  # as declared; ("",) for none
    encodings: tuple[str, ...]  # pydicom's Python codecs for them
    code_extensions: bool  # ISO 2022 escape sequences are allowed in values

    @property
    def declared(self) -> bool:
        return self.terms != ("",)

    def __str__(self) -> str:
        return f"its Specific Character Set is {chr(92).join(self.terms)}" if self.declared else \
            "no Specific Character Set is declared"


DEFAULT = CharacterSet(terms=("",), encodings=(_ASCII_ONLY,), code_extensions=False)


def character_set(value: Any) -> CharacterSet:
    """The character set of a Specific Character Set value (str, several str, raw bytes or None).

    Raises UndecodableText for an unknown or misspelled term (pydicom would guess what was
    meant) and for combinations the standard forbids (ISO_IR 192, GB18030 and the other
    terms without code extensions stand alone)."""
    if value is None:
        return DEFAULT
    if isinstance(value, bytes):
        if not value.isascii() or ESC in value:
            raise UndecodableText(f"{_UNSURE}: its Specific Character Set is not plain ASCII")
        value = value.decode("ascii").split("\\")
    terms = [value] if isinstance(value, str) else [str(v) for v in value]
    terms = [t.strip(" \x00") for t in terms]
    if not any(terms):
        return DEFAULT
    for term in terms:
        if term and term not in PYTHON_ENCODING:
            raise UndecodableText(f"{_UNSURE}: its Specific Character Set {_quote(term)} is not a defined term")
    if len(terms) > 1:
        if terms[0] == "":
            terms[0] = "ISO 2022 IR 6"  # an empty first value: the default repertoire, with extensions
        if not all(t.startswith("ISO 2022") for t in terms):
            raise UndecodableText(f"{_UNSURE}: its Specific Character Set {_quote(chr(92).join(terms))} combines "
                                  "a character set without code extensions with others")
    elif not terms[0]:
        return DEFAULT
    encodings = tuple(convert_encodings(list(terms)))
    return CharacterSet(terms=tuple(terms), encodings=encodings,
                        code_extensions=any(t.startswith("ISO 2022") for t in terms))


def decode_values(raw: bytes | None, charset: CharacterSet, vr: str) -> list[str]:
    """The values of one element's raw bytes, decoded with `charset` as pydicom decodes them.

    Text VRs (PN, LO, SH, UC, LT, ST, UT) use the character set; every other string VR (CS, AE,
    DA, TM, UI, ...) holds the default repertoire only and must be ASCII. Multiple values are
    split at backslashes after decoding (a multi-byte character may hold the byte 0x5C); LT, ST
    and UT are one value. Trailing spaces and NULs (padding) are removed."""
    if not raw:
        return []
    if vr not in TEXT_VRS:
        if not raw.isascii():
            raise UndecodableText(f"holds non-ASCII bytes, which its VR {vr} does not allow")
        text = raw.decode("ascii")
    else:
        raw = raw.rstrip(b"\x00 ")
        _check_bytes(raw, charset)
        text = decode_bytes(raw, list(charset.encodings), TEXT_VR_DELIMS)
    values = [text] if vr in UNSPLIT_VRS else text.split("\\")
    values = [v.rstrip("\x00 ") for v in values]
    for v in values:
        check_text(v, vr=vr)
    return values


def decode_text(raw: bytes | None, specific_character_set: Any, vr: str = "LO") -> str:
    """One element's raw bytes as text (several values joined by a backslash)."""
    return "\\".join(decode_values(raw, character_set(specific_character_set), vr))


def check_text(text: str, *, vr: str = "LO", charset: CharacterSet | None = None) -> None:
    """Refuse text that must not reach an ISO_IR 192 object: an ESC (an escape sequence left
    undecoded), any other C0 or C1 control character or DEL (LT, ST and UT may hold TAB, LF,
    FF and CR), or U+FFFD. With `charset`, text that was decoded elsewhere (already Unicode)
    must also be text of that character set: ASCII where none is declared."""
    allowed = _FORMAT_CONTROLS if vr in UNSPLIT_VRS else frozenset()
    if "\x1b" in text:
        raise UndecodableText("holds an ISO 2022 escape sequence left undecoded")
    if any((ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) and c not in allowed for c in text):
        raise UndecodableText("holds control characters")
    if "\ufffd" in text:
        raise UndecodableText("holds U+FFFD, text lost in an earlier conversion")
    if any(remains in text for remains in _DESIGNATOR_REMAINS):
        raise UndecodableText("holds the remains of an ISO 2022 escape sequence whose ESC byte an earlier "
                              "conversion dropped (its text is lost)")
    if charset is not None and charset.encodings == (_ASCII_ONLY,) and not text.isascii():
        raise UndecodableText(f"holds non-ASCII text and {charset} (ASCII only)")


def _check_bytes(raw: bytes, charset: CharacterSet) -> None:
    """Every case where pydicom.charset.decode_bytes would warn and guess, refused beforehand:
    the same fragments, decoded strictly with the same codecs."""
    encodings = list(charset.encodings)
    if ESC not in raw:
        _strict(raw, encodings[0], charset)
        return
    if not charset.code_extensions:
        raise UndecodableText(f"{_UNSURE}: it holds an escape sequence and {charset}, which has no code extensions")
    for fragment in _FRAGMENTS.findall(raw):
        if not fragment.startswith(ESC):
            _strict(fragment, encodings[0], charset)
            continue
        length = 4 if fragment.startswith((b"\x1b$(", b"\x1b$)")) else 3
        encoding = CODES_TO_ENCODINGS.get(fragment[:length], "")
        if not encoding or (encoding not in encodings and encoding != default_encoding):
            raise UndecodableText(f"{_UNSURE}: it holds an unknown escape sequence or one for a character set "
                                  f"not declared ({charset})")
        if encoding in handled_encodings:  # Python's codec reads the escape sequence itself
            _strict(fragment, encoding, charset)
            continue
        body = fragment[length:]
        cut = next((i for i, byte in enumerate(body) if byte in TEXT_VR_DELIMS), len(body))
        _strict(body[:cut], encoding, charset)
        _strict(body[cut:], encodings[0], charset)


def _strict(raw: bytes, encoding: str, charset: CharacterSet) -> None:
    if encoding == _ASCII_ONLY and not raw.isascii():
        raise UndecodableText(f"{_UNSURE}: it holds non-ASCII bytes and {charset} (a guess would be mojibake)")
    try:
        raw.decode(encoding)
    except (UnicodeError, LookupError):
        raise UndecodableText(f"{_UNSURE}: it holds bytes that are not valid text where {charset}") from None


def _quote(term: str) -> str:
    """A character set term for a message: not patient data, but a hostile server chose it."""
    shown = "".join(c if c.isascii() and c.isprintable() else "?" for c in term[:32])
    return repr(shown)


__all__ = ["DEFAULT", "CharacterSet", "UndecodableText", "character_set", "check_text", "decode_text",
           "decode_values"]
