"""The simulated X-ray generator, serving docs/generator-protocol.md on a pseudo-terminal.

A thread reads sentences from the pty master and answers them; the host opens the slave
(``path``) with pyserial like any serial port. The technologist's hand switch is
``press()``: it fires only while the host has released exposures with ENABLE, and reports
the exposure with unsolicited EVT sentences. EXPOSE (or a press) calls ``on_pulse(kvp, mas)``, which
delivers the dose to the room and returns the air kerma (uGy) at the detector plane; the
DAP the generator reports is that kerma times the collimated field area.
"""

from __future__ import annotations

import logging
import os
import random
import select
import threading
import time
import tty
from collections.abc import Callable
from functools import reduce

LOGGER = logging.getLogger(__name__)

KV_RANGE = (40.0, 150.0)
MAS_RANGE = (0.1, 500.0)
TUBE_CURRENT_MA = 200.0
_MAX_LINE = 82


def _checksum(body: str) -> str:
    return f"{reduce(lambda a, c: a ^ c, body.encode('ascii'), 0):02X}"


def _sentence(body: str) -> bytes:
    return f"${body}*{_checksum(body)}\r\n".encode("ascii")


class SimGenerator:
    """An X-ray generator on a pty, with fault injection for tests."""

    def __init__(self, on_pulse: Callable[[float, float], float], *, seed: int = 1,
                 serial: str = "GEN-0001", field_area_cm2: float = 43.0 * 43.0,
                 prep_time_s: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self._on_pulse = on_pulse
        self._rng = random.Random(seed)
        self.serial = serial
        self.field_area_cm2 = field_area_cm2
        self.prep_time_s = prep_time_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._state = "IDLE"
        self._kvp, self._mas = 70.0, 2.0
        self._interlock: str | None = None
        self._garble = 0
        self._readback: str | None = None
        self.exposures = 0
        self.presses_refused = 0  # hand-switch presses while exposures were not released: no X-rays
        # Held while a reply or an event is decided and written: an EVT,DONE is on the line
        # before the reply to any command handled after it (the host relies on this order).
        self._io = threading.Lock()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation before pyserial opens it
        self.path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name=f"sim-generator-{serial}", daemon=True)
        self._thread.start()

    # --- fault injection -------------------------------------------------------------------

    def garble_next_reply(self, n: int = 1) -> None:
        with self._lock:
            self._garble = n  # the count still to come, not added to

    def readback_next(self, fields: str) -> None:
        """The next EXPOSE fires as usual but reports ``DONE,<fields>`` (e.g. "nan,-5,1e12,0"):
        a generator whose readback is absurd though well-formed on the line."""
        with self._lock:
            self._readback = fields

    def interlock(self, reason: str = "door open") -> None:
        """Latch an interlock fault: PREP and EXPOSE are refused until clear_interlock()."""
        with self._lock:
            self._interlock = reason
            self._state = "FAULT"

    def clear_interlock(self) -> None:
        with self._lock:
            self._interlock = None
            self._state = "IDLE"

    # --- the hand switch ---------------------------------------------------------------------

    def press(self) -> bool:
        """The technologist presses the hand switch through both stages (prepare, expose).

        Fires only while the host has released exposures (ENABLE) and no interlock is latched;
        returns whether X-rays were delivered. Each release allows one exposure.
        """
        with self._io:
            with self._lock:
                if self._state != "ENABLED" or self._interlock:
                    self.presses_refused += 1
                    LOGGER.info("hand switch pressed while exposures are not released (%s): no X-rays",
                                self._interlock or self._state)
                    return False
                self._state = "PREPARING"
            os.write(self._master, _sentence("EVT,PREP"))
            if self.prep_time_s > 0:
                self._sleep(self.prep_time_s)
            with self._lock:
                self._state = "READY"
            reply = self._expose([])
            os.write(self._master, self._maybe_garble(_sentence("EVT," + reply)))
            return reply.startswith("DONE")

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def close(self) -> None:
        if self._wake_w < 0:
            return
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_w = -1

    # --- serving ---------------------------------------------------------------------------

    def _serve(self) -> None:
        pending = b""
        while True:
            ready, _, _ = select.select([self._master, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                chunk = os.read(self._master, 4096)
            except OSError as exc:  # EIO when no process holds the slave; ours always does
                LOGGER.warning("generator pty read failed: %s", exc)
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                with self._io:
                    reply = self._handle(line.rstrip(b"\r"))
                    os.write(self._master, self._maybe_garble(reply))
            if len(pending) > 4 * _MAX_LINE:
                pending = b""
                os.write(self._master, _sentence("ERR,SYNTAX,line too long"))

    def _maybe_garble(self, reply: bytes) -> bytes:
        with self._lock:
            if not self._garble:
                return reply
            self._garble -= 1
        broken = bytearray(reply)
        broken[1] ^= 0x01  # a bit error on the line: the checksum no longer fits
        return bytes(broken)

    def _handle(self, line: bytes) -> bytes:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return _sentence("ERR,CHECKSUM,non-ASCII line")
        if len(text) < 4 or text[0] != "$" or text[-3] != "*" or text[-2:].upper() != _checksum(text[1:-3]):
            return _sentence("ERR,CHECKSUM,bad sentence")
        fields = text[1:-3].split(",")
        verb, args = fields[0], fields[1:]
        handler = {"ID": self._id, "TECH": self._tech, "PREP": self._prep, "EXPOSE": self._expose,
                   "STATUS": self._status, "RESET": self._reset,
                   "ENABLE": self._enable, "DISABLE": self._disable}.get(verb)
        if handler is None:
            return _sentence(f"ERR,SYNTAX,unknown command {verb[:20]}")
        return _sentence(handler(args))

    def _id(self, args: list[str]) -> str:
        return f"ID,dxgate,SimGen 65kW,{self.serial},1.0.0"

    def _tech(self, args: list[str]) -> str:
        try:
            kvp, mas = (float(a) for a in args)
        except ValueError:
            return "ERR,SYNTAX,TECH needs kV and mAs"
        if not (KV_RANGE[0] <= kvp <= KV_RANGE[1]) or not (MAS_RANGE[0] <= mas <= MAS_RANGE[1]):
            return f"ERR,RANGE,kV {KV_RANGE[0]:g}-{KV_RANGE[1]:g} mAs {MAS_RANGE[0]:g}-{MAS_RANGE[1]:g}"
        with self._lock:
            if self._state in ("READY", "ENABLED", "PREPARING"):
                return f"ERR,STATE,TECH while {self._state}"
            self._kvp, self._mas = float(round(kvp)), round(mas, 2)
            return f"TECH,{self._kvp:.1f},{self._mas:.2f}"

    def _prep(self, args: list[str]) -> str:
        with self._lock:
            if self._interlock:
                return f"ERR,INTERLOCK,{self._interlock}"
        if self.prep_time_s > 0:
            self._sleep(self.prep_time_s)  # rotor spin-up
        with self._lock:
            self._state = "READY"
        return "READY"

    def _expose(self, args: list[str]) -> str:
        with self._lock:
            if self._interlock:
                return f"ERR,INTERLOCK,{self._interlock}"
            if self._state != "READY":
                return "ERR,STATE,EXPOSE without PREP"
            kvp = self._kvp * (1 + self._rng.uniform(-0.01, 0.01))
            mas = self._mas * (1 + self._rng.uniform(-0.02, 0.02))
            self._state = "IDLE"
            self.exposures += 1
        kerma_ugy = self._on_pulse(kvp, mas)
        ms = mas / TUBE_CURRENT_MA * 1000.0
        dap_dgy_cm2 = kerma_ugy * 1e-6 * 10.0 * self.field_area_cm2  # Gy -> dGy, times cm2
        with self._lock:
            override, self._readback = self._readback, None
        if override is not None:
            return f"DONE,{override}"
        return f"DONE,{kvp:.1f},{mas:.2f},{ms:.1f},{dap_dgy_cm2:.4f}"

    def _enable(self, args: list[str]) -> str:
        with self._lock:
            if self._interlock:
                return f"ERR,INTERLOCK,{self._interlock}"
            if self._state not in ("IDLE", "ENABLED"):
                return f"ERR,STATE,ENABLE while {self._state}"
            self._state = "ENABLED"
        return "ENABLED"

    def _disable(self, args: list[str]) -> str:
        with self._lock:
            if self._state == "ENABLED":
                self._state = "IDLE"
        return "OK"

    def _status(self, args: list[str]) -> str:
        with self._lock:
            return f"STATUS,{self._state},{self._kvp:.1f},{self._mas:.2f}"

    def _reset(self, args: list[str]) -> str:
        with self._lock:
            if self._state == "READY":
                self._state = "IDLE"
        return "OK"
