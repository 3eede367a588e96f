"""NMEA-style sentences of the generator protocol (docs/generator-protocol.md): pure, no I/O."""

from __future__ import annotations

import logging
from functools import reduce

LOGGER = logging.getLogger(__name__)

MAX_SENTENCE = 82
QUOTE_LIMIT = 80


class SentenceError(ValueError):
    """A line that is not a well-formed sentence with a correct checksum."""


def checksum(body: str) -> str:
    return f"{reduce(lambda acc, b: acc ^ b, body.encode('ascii'), 0):02X}"


def encode(*fields: str) -> bytes:
    body = ",".join(fields)
    if any(c in body for c in "$*\r\n") or not body.isascii() or not body.isprintable():
        raise ValueError(f"sentence body may hold printable ASCII without $ or *: {body[:QUOTE_LIMIT]!r}")
    line = f"${body}*{checksum(body)}\r\n".encode("ascii")
    if len(line) > MAX_SENTENCE:
        raise ValueError(f"sentence longer than {MAX_SENTENCE} bytes: {body[:QUOTE_LIMIT]!r}")
    return line


def quote(raw: bytes) -> str:
    """A line as it may appear in an error message: repr, at most ~80 characters."""
    text = repr(raw[:QUOTE_LIMIT])
    return text + ("..." if len(raw) > QUOTE_LIMIT else "")


def decode(raw: bytes) -> list[str]:
    """Fields of a sentence (verb first); SentenceError when shape or checksum is wrong."""
    line = raw.rstrip(b"\r\n")
    if not raw.endswith(b"\r\n"):
        raise SentenceError(f"incomplete line (no CR LF) {quote(raw)}")
    if len(raw) > MAX_SENTENCE:
        raise SentenceError(f"line of {len(raw)} bytes, longer than the {MAX_SENTENCE} allowed {quote(raw)}")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise SentenceError(f"non-ASCII bytes in line {quote(raw)}") from None
    if len(text) < 4 or text[0] != "$" or text[-3] != "*":
        raise SentenceError(f"malformed line {quote(raw)}")
    body, given = text[1:-3], text[-2:]
    if not body or "$" in body or "*" in body or not body.isprintable():
        raise SentenceError(f"malformed line {quote(raw)}")
    if given.upper() != checksum(body):
        raise SentenceError(f"checksum mismatch (line says {given}, computed {checksum(body)}) "
                            f"in line {quote(raw)}")
    return body.split(",")
