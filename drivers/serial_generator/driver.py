"""pyserial driver for X-ray generators speaking the dxgate generator protocol.

Works on any pyserial URL: a real port (/dev/ttyUSB0), the simulator's pseudo-terminal,
``socket://host:port`` (a terminal server), or ``loop://`` in a unit test. Line noise (a line
that is not a sentence) is skipped; a garbled sentence, a silence or an unexpected reply is a
GeneratorError naming the line. Queries are asked once more after such an error; commands
never are, and an exposure is reported only from the generator's DONE.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import serial

from drivers.serial_generator import protocol as p
from gateway.errors import DeviceError, DeviceNotFound, GeneratorError, GeneratorRefused
from gateway.types import ExposureReadback, Technique

LOGGER = logging.getLogger(__name__)

# Queries that change nothing: asked once more after a garbled reply or a silence. Commands
# (TECH, PREP, EXPOSE, ENABLE, ...) are never repeated: their error goes to the caller.
IDEMPOTENT = frozenset({"ID", "STATUS", "GETTECH", "PING"})


@dataclass(frozen=True)
class TechniqueSetting:
    """The technique as the generator holds it: kV, mA, ms and their product mAs."""

    kvp: float
    ma: float
    ms: float
    mas: float


def open_generator(*, port: str, baudrate: int = 115200, timeout_s: float = 5.0) -> SerialGenerator:
    """Open the serial link and check a generator answers ID."""
    try:
        link = serial.serial_for_url(port, baudrate=baudrate, timeout=timeout_s, write_timeout=timeout_s)
    except serial.SerialException as exc:
        raise DeviceNotFound(f"cannot open generator port {port!r}: {exc}") from exc
    gen = SerialGenerator(link, port=port, timeout_s=timeout_s)
    try:
        gen.identify()
    except BaseException:
        gen.close()
        raise
    return gen


class SerialLink(Protocol):
    """What the driver needs of a pyserial port; every URL handler's class provides it
    (``SerialBase`` itself lacks ``reset_input_buffer``)."""

    timeout: float | None

    def reset_input_buffer(self) -> None: ...
    def write(self, b: bytes, /) -> int | None: ...
    def flush(self) -> None: ...
    def read_until(self, expected: bytes = b"\n", size: int | None = None) -> bytes: ...
    def close(self) -> None: ...


class SerialGenerator:
    """One generator on a serial link. Implements gateway.ports.Generator structurally."""

    def __init__(self, link: SerialLink, *, port: str, timeout_s: float) -> None:
        self._link = link
        self._port = port
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self.identity: tuple[str, ...] = ()

    def identify(self) -> tuple[str, ...]:
        """(manufacturer, model, serial, firmware) as the generator reports them."""
        fields = self._command("ID", expect="ID", count=4)
        self.identity = tuple(fields)
        LOGGER.info("generator on %s: %s", self._port, " ".join(fields))
        return self.identity

    def set_technique(self, technique: Technique) -> Technique:
        kvp, mas = self._numbers(self._command("TECH", f"{technique.kvp:g}", f"{technique.mas:g}",
                                               expect="TECH", count=2), "TECH")
        return Technique(kvp=kvp, mas=mas)

    def set_technique_3(self, kvp: float, ma: float, ms: float) -> TechniqueSetting:
        """Three-point technique (kV, mA, ms); returns what the generator accepted."""
        return TechniqueSetting(*self._numbers(self._command("TECH3", f"{kvp:g}", f"{ma:g}", f"{ms:g}",
                                                             expect="TECH3", count=4), "TECH3"))

    def read_technique(self) -> TechniqueSetting:
        return TechniqueSetting(*self._numbers(self._command("GETTECH", expect="TECH3", count=4), "TECH3"))

    def heartbeat(self) -> float:
        """PING -> PONG; the round trip in seconds. A generator that hears nothing from a host
        holding a release withdraws it (docs/generator-protocol.md, heartbeat)."""
        t0 = time.monotonic()
        self._command("PING", expect="PONG", count=0)
        return time.monotonic() - t0

    def prepare(self) -> None:
        self._command("PREP", expect="READY", count=0)

    def expose(self) -> ExposureReadback:
        """Fire and return the delivered values as the generator reports them (unchecked:
        NaN or absurd values are the gateway's to flag). GeneratorRefused means no X-rays;
        any other error leaves the dose unknown."""
        return self._readback(self._command("EXPOSE", expect="DONE", count=4, more=1), "DONE")

    def _readback(self, fields: list[str], verb: str) -> ExposureReadback:
        """kV, mAs, ms, DAP (version 1) and the mA version 2 appends."""
        values = self._numbers(fields, verb)
        return ExposureReadback(kvp=values[0], mas=values[1], exposure_time_ms=values[2], dap_dgy_cm2=values[3],
                                tube_current_ma=values[4] if len(values) > 4 else None)

    # --- the hand switch ---------------------------------------------------------------------

    def enable_hand_switch(self) -> None:
        """Release one exposure to the technologist's hand switch (the detector is armed)."""
        self._command("ENABLE", expect="ENABLED", count=0)

    def wait_hand_switch(self, timeout_s: float, heartbeat_s: float | None = None) -> ExposureReadback | None:
        """The exposure the hand switch made, or None if none ended within `timeout_s`.

        A prepare event only resets the wait. GeneratorError for a garbled or unexpected line:
        X-rays may have been given, so the caller reads the frame out with the dose unknown.
        With `heartbeat_s`, a PING goes out that often while waiting (its PONG is skipped), so a
        generator with a heartbeat watchdog keeps the release.
        """
        deadline = time.monotonic() + timeout_s
        next_ping = time.monotonic() if heartbeat_s else math.inf
        with self._lock:
            while (left := deadline - time.monotonic()) > 0:
                if heartbeat_s and time.monotonic() >= next_ping:
                    self._write_raw("PING")
                    next_ping = time.monotonic() + heartbeat_s
                fields = self._event(min(left, max(next_ping - time.monotonic(), 0.01)))
                if fields is None:
                    continue
                if fields == ["PONG"]:
                    continue
                if fields[:2] == ["EVT", "PREP"]:
                    LOGGER.info("generator on %s: hand switch pressed, preparing", self._port)
                    continue
                return self._event_done(fields)
        return None

    def _write_raw(self, verb: str) -> None:
        """Write one sentence without reading (the lock is held; events may be waiting)."""
        try:
            self._link.write(p.encode(verb))
            self._link.flush()
        except serial.SerialException as exc:
            raise DeviceError(f"generator on {self._port}: {verb} failed: {exc}") from exc

    def disable_hand_switch(self) -> ExposureReadback | None:
        """Withdraw the release. The generator sends an exposure's EVT,DONE before its reply to
        DISABLE, so an exposure that raced the withdrawal is returned here, never lost."""
        with self._lock:
            try:
                self._link.write(p.encode("DISABLE"))  # no input reset: an event may be waiting
                self._link.flush()
            except serial.SerialException as exc:
                raise DeviceError(f"generator on {self._port}: DISABLE failed: {exc}") from exc
            done: ExposureReadback | None = None
            for _ in range(8):  # PREP and DONE events, then the reply
                fields = self._event(self._timeout_s)
                if fields is None:
                    raise GeneratorError(f"generator on {self._port}: no reply to DISABLE within "
                                         f"{self._timeout_s:g} s")
                if fields == ["OK"]:
                    return done
                if fields[:2] == ["EVT", "PREP"] or fields == ["PONG"]:  # PONG: a heartbeat's late answer
                    continue
                done = self._event_done(fields)
            raise GeneratorError(f"generator on {self._port}: no OK to DISABLE among its replies")

    def _event(self, timeout_s: float) -> list[str] | None:
        """One sentence from the generator within `timeout_s` (None: silence); the lock is held."""
        try:
            self._link.timeout = max(0.01, timeout_s)
            raw = self._link.read_until(b"\n", p.MAX_SENTENCE * 4)
        except serial.SerialException as exc:
            raise DeviceError(f"generator on {self._port}: read failed: {exc}") from exc
        finally:
            self._link.timeout = self._timeout_s
        if not raw:
            return None
        if not raw.endswith(b"\n"):  # a line cut by the timeout: wait for its end once
            try:
                raw += self._link.read_until(b"\n", p.MAX_SENTENCE * 4)
            except serial.SerialException as exc:
                raise DeviceError(f"generator on {self._port}: read failed: {exc}") from exc
        try:
            return p.decode(raw)
        except p.SentenceError as exc:
            raise GeneratorError(f"generator on {self._port}: garbled line while exposures were released: "
                                 f"{exc}") from None

    def _event_done(self, fields: list[str]) -> ExposureReadback:
        if fields[:2] == ["EVT", "ERR"]:
            raise GeneratorRefused(f"generator on {self._port} refused the hand switch: {','.join(fields[2:])}")
        if fields[:2] != ["EVT", "DONE"] or len(fields) not in (6, 7):
            raise GeneratorError(f"generator on {self._port}: unexpected line while exposures were released: "
                                 f"{','.join(fields)[:p.QUOTE_LIMIT]!r}")
        return self._readback(fields[2:], "EVT,DONE")

    def reset(self) -> None:
        self._command("RESET", expect="OK", count=0)

    def status(self) -> tuple[str, ...]:
        """(state, kV, mAs) and, from a version-2 generator, tube heat in percent."""
        return tuple(self._command("STATUS", expect="STATUS", count=3, more=1))

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> SerialGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- line exchange ---------------------------------------------------------------------

    def _command(self, verb: str, *args: str, expect: str, count: int, more: int = 0) -> list[str]:
        """Send one command and return the fields of its reply (``count`` fields, up to ``more``
        further ones a newer generator appends). Queries are asked once more after an error."""
        tries = 2 if verb in IDEMPOTENT else 1
        for attempt in range(1, tries + 1):
            try:
                return self._exchange(verb, args, expect, count, more)
            except GeneratorRefused:
                raise
            except GeneratorError as exc:
                if attempt == tries:
                    raise
                LOGGER.warning("generator on %s: %s; asking again", self._port, exc)
        raise AssertionError("unreachable")

    def _exchange(self, verb: str, args: tuple[str, ...], expect: str, count: int, more: int) -> list[str]:
        with self._lock:
            try:
                self._link.reset_input_buffer()  # a late reply to an earlier command is stale
                self._link.write(p.encode(verb, *args))
                self._link.flush()
                raw = self._sentence_line(time.monotonic() + self._timeout_s)
            except serial.SerialException as exc:
                raise DeviceError(f"generator on {self._port}: {verb} failed: {exc}") from exc
        if not raw:
            raise GeneratorError(f"generator on {self._port}: no reply to {verb} within "
                                 f"{self._timeout_s:g} s")
        try:
            fields = p.decode(raw)
        except p.SentenceError as exc:
            raise GeneratorError(f"generator on {self._port}: garbled reply to {verb}: {exc}") from None
        if fields[0] == "ERR":
            code = fields[1] if len(fields) > 1 else "?"
            text = ",".join(fields[2:])
            raise GeneratorRefused(f"generator on {self._port} refused {verb}: {code} {text}".rstrip())
        if fields[0] != expect or not count + 1 <= len(fields) <= count + 1 + more:
            raise GeneratorError(f"generator on {self._port}: unexpected reply to {verb}: "
                                 f"{p.quote(raw)} (expected {expect} with {count} fields)")
        return fields[1:]

    def _sentence_line(self, deadline: float) -> bytes:
        """The next line that may be a sentence (a `$` after any leading NUL/0xFF/blank bytes),
        skipping line noise; b"" on silence until ``deadline``. The lock is held."""
        try:
            while True:
                raw = self._link.read_until(b"\n", p.MAX_SENTENCE * 4)
                if not raw.endswith(b"\n"):
                    return raw  # silence, or a line cut by the timeout: decode() names it
                line = raw.lstrip(b"\x00\xff\r\n ")
                if line.startswith(b"$"):
                    return line
                LOGGER.warning("generator on %s: line noise skipped: %s", self._port, p.quote(raw))
                left = deadline - time.monotonic()
                if left <= 0:
                    return b""
                self._link.timeout = left
        finally:
            self._link.timeout = self._timeout_s

    def _numbers(self, fields: list[str], verb: str) -> list[float]:
        try:
            return [float(f) for f in fields]
        except ValueError:
            raise GeneratorError(f"generator on {self._port}: non-numeric {verb} fields "
                                 f"{','.join(fields)[:p.QUOTE_LIMIT]!r}") from None
