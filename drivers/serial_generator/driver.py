"""pyserial driver for X-ray generators speaking the dxgate generator protocol.

Works on any pyserial URL: a real port (/dev/ttyUSB0), the simulator's pseudo-terminal,
or ``loop://`` in a unit test.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import serial

from drivers.serial_generator import protocol as p
from gateway.errors import DeviceError, DeviceNotFound, GeneratorError, GeneratorRefused
from gateway.types import ExposureReadback, Technique

LOGGER = logging.getLogger(__name__)


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

    def prepare(self) -> None:
        self._command("PREP", expect="READY", count=0)

    def expose(self) -> ExposureReadback:
        """Fire and return the delivered values as the generator reports them (unchecked:
        NaN or absurd values are the gateway's to flag). GeneratorRefused means no X-rays;
        any other error leaves the dose unknown."""
        kvp, mas, ms, dap = self._numbers(self._command("EXPOSE", expect="DONE", count=4), "DONE")
        return ExposureReadback(kvp=kvp, mas=mas, exposure_time_ms=ms, dap_dgy_cm2=dap)

    # --- the hand switch ---------------------------------------------------------------------

    def enable_hand_switch(self) -> None:
        """Release one exposure to the technologist's hand switch (the detector is armed)."""
        self._command("ENABLE", expect="ENABLED", count=0)

    def wait_hand_switch(self, timeout_s: float) -> ExposureReadback | None:
        """The exposure the hand switch made, or None if none ended within `timeout_s`.

        A prepare event only resets the wait. GeneratorError for a garbled or unexpected line:
        X-rays may have been given, so the caller reads the frame out with the dose unknown.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while (left := deadline - time.monotonic()) > 0:
                fields = self._event(left)
                if fields is None:
                    return None
                if fields[:2] == ["EVT", "PREP"]:
                    LOGGER.info("generator on %s: hand switch pressed, preparing", self._port)
                    continue
                return self._event_done(fields)
        return None

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
                if fields[:2] == ["EVT", "PREP"]:
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
        if fields[:2] != ["EVT", "DONE"] or len(fields) != 6:
            raise GeneratorError(f"generator on {self._port}: unexpected line while exposures were released: "
                                 f"{','.join(fields)[:p.QUOTE_LIMIT]!r}")
        kvp, mas, ms, dap = self._numbers(fields[2:], "EVT,DONE")
        return ExposureReadback(kvp=kvp, mas=mas, exposure_time_ms=ms, dap_dgy_cm2=dap)

    def reset(self) -> None:
        self._command("RESET", expect="OK", count=0)

    def status(self) -> tuple[str, ...]:
        return tuple(self._command("STATUS", expect="STATUS", count=3))

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> SerialGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- line exchange ---------------------------------------------------------------------

    def _command(self, verb: str, *args: str, expect: str, count: int) -> list[str]:
        with self._lock:
            try:
                self._link.reset_input_buffer()  # a late reply to an earlier command is stale
                self._link.write(p.encode(verb, *args))
                self._link.flush()
                raw = self._link.read_until(b"\n", p.MAX_SENTENCE * 4)
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
        if fields[0] != expect or len(fields) != count + 1:
            raise GeneratorError(f"generator on {self._port}: unexpected reply to {verb}: "
                                 f"{p.quote(raw)} (expected {expect} with {count} fields)")
        return fields[1:]

    def _numbers(self, fields: list[str], verb: str) -> list[float]:
        try:
            return [float(f) for f in fields]
        except ValueError:
            raise GeneratorError(f"generator on {self._port}: non-numeric {verb} fields "
                                 f"{','.join(fields)[:p.QUOTE_LIMIT]!r}") from None
