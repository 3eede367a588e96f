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
MA_RANGE = (10.0, 1000.0)
MS_RANGE = (1.0, 5000.0)
TUBE_CURRENT_MA = 200.0  # the tube current a two-point technique (kV, mAs) is given at
HEAT_LIMIT_PERCENT = 95.0  # tube heat at which PREP, EXPOSE and ENABLE are refused
HEAT_PER_KV_MAS = 1 / 300.0  # percent of the anode's heat capacity per kV x mAs
COOLING_PERCENT_PER_S = 0.5  # the anode cools while it rests (a room's busy hour stays below the limit)
_MAX_LINE = 82


def _checksum(body: str) -> str:
    return f"{reduce(lambda a, c: a ^ c, body.encode('ascii'), 0):02X}"


def _sentence(body: str) -> bytes:
    return f"${body}*{_checksum(body)}\r\n".encode("ascii")


class SimGenerator:
    """An X-ray generator on a pty, with fault injection for tests."""

    def __init__(self, on_pulse: Callable[[float, float], float], *, seed: int = 1,
                 serial: str = "GEN-0001", field_area_cm2: float = 43.0 * 43.0,
                 prep_time_s: float = 0.0, sleep: Callable[[float], None] = time.sleep,
                 exp_req: Callable[[], bool] | None = None, heartbeat_timeout_s: float | None = None) -> None:
        self._on_pulse = on_pulse
        self._exp_req = exp_req  # the sync cable to the panel: EXP_REQ, answered EXP_OK (True) or not
        self._rng = random.Random(seed)
        self.serial = serial
        self.field_area_cm2 = field_area_cm2
        self.prep_time_s = prep_time_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._state = "IDLE"
        self._kvp, self._mas = 70.0, 2.0
        self._ma = TUBE_CURRENT_MA
        self._interlock: str | None = None
        self._garble = 0
        self._readback: str | None = None
        self._noise = b""  # line noise written before the next reply
        self._anode_fault = 0
        self._silent = False
        self._heat, self._heat_at = 0.0, time.monotonic()
        self.heartbeat_timeout_s = heartbeat_timeout_s  # None: no heartbeat watchdog
        self._last_heard = time.monotonic()
        self.releases_withdrawn = 0  # releases ended by the heartbeat watchdog
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

    def noise_before_next_reply(self, data: bytes = b"\x00\xff~~ line noise ~~\r\n") -> None:
        """Junk on the line (a power-up banner, a glitch) before the next reply or event."""
        with self._lock:
            self._noise = data

    def anode_fault(self, n: int = 1) -> None:
        """The next N prepares find the rotor not up to speed: ANODE, no X-rays."""
        with self._lock:
            self._anode_fault = n

    @property
    def heat_percent(self) -> float:
        """The anode's stored heat now: what exposures added, less what it lost since."""
        now = time.monotonic()
        self._heat, self._heat_at = max(0.0, self._heat - COOLING_PERCENT_PER_S * (now - self._heat_at)), now
        return self._heat

    @heat_percent.setter
    def heat_percent(self, percent: float) -> None:
        self._heat, self._heat_at = percent, time.monotonic()

    def set_tube_heat(self, percent: float) -> None:
        """The anode's stored heat, percent of its capacity (exposures add to it)."""
        with self._lock:
            self.heat_percent = percent

    def go_silent(self, silent: bool = True) -> None:
        """The generator stops answering (powered down, cable cut): commands get no reply."""
        with self._lock:
            self._silent = silent

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
            refusal = self._prepare_refusal()
            if refusal is None and self.prep_time_s > 0:
                self._sleep(self.prep_time_s)
            with self._lock:
                self._state = "READY" if refusal is None else "IDLE"
            reply = self._expose([]) if refusal is None else refusal
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
            ready, _, _ = select.select([self._master, self._wake_r], [], [], self._watchdog_wait())
            if self._wake_r in ready:
                return
            if not ready:
                self._heartbeat_lost()
                continue
            self._last_heard = time.monotonic()
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
                    with self._lock:
                        silent, noise, self._noise = self._silent, self._noise, b""
                    if not silent:
                        os.write(self._master, noise + self._maybe_garble(reply))
            if len(pending) > 4 * _MAX_LINE:
                pending = b""
                os.write(self._master, _sentence("ERR,SYNTAX,line too long"))

    def _watchdog_wait(self) -> float | None:
        with self._lock:
            if self.heartbeat_timeout_s is None or self._state != "ENABLED":
                return None if self.heartbeat_timeout_s is None else self.heartbeat_timeout_s
            return max(0.0, self._last_heard + self.heartbeat_timeout_s - time.monotonic())

    def _heartbeat_lost(self) -> None:
        """No sentence from the host within the heartbeat timeout while released: the release
        is withdrawn (a host that went away cannot keep the image), and the host is told."""
        with self._io:
            with self._lock:
                if self._state != "ENABLED" or self.heartbeat_timeout_s is None:
                    return
                if time.monotonic() - self._last_heard < self.heartbeat_timeout_s:
                    return
                self._state = "IDLE"
                self.releases_withdrawn += 1
            LOGGER.warning("generator: no heartbeat from the host: release withdrawn")
            os.write(self._master, _sentence("EVT,ERR,HEARTBEAT,host silent: release withdrawn"))

    def _prepare_refusal(self) -> str | None:
        """Why a prepare cannot lead to an exposure (interlock, tube heat, anode), or None."""
        with self._lock:
            if self._interlock:
                return f"ERR,INTERLOCK,{self._interlock}"
            if self.heat_percent >= HEAT_LIMIT_PERCENT:
                return f"ERR,HEAT,tube heat {self.heat_percent:.0f} % (limit {HEAT_LIMIT_PERCENT:.0f} %)"
            if self._anode_fault:
                self._anode_fault -= 1
                return "ERR,ANODE,anode not up to speed"
        return None

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
                   "ENABLE": self._enable, "DISABLE": self._disable, "TECH3": self._tech3,
                   "GETTECH": self._gettech, "PING": self._ping}.get(verb)
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
            self._ma = TUBE_CURRENT_MA
            return f"TECH,{self._kvp:.1f},{self._mas:.2f}"

    def _tech3(self, args: list[str]) -> str:
        try:
            kvp, ma, ms = (float(a) for a in args)
        except ValueError:
            return "ERR,SYNTAX,TECH3 needs kV, mA and ms"
        if not (KV_RANGE[0] <= kvp <= KV_RANGE[1] and MA_RANGE[0] <= ma <= MA_RANGE[1]
                and MS_RANGE[0] <= ms <= MS_RANGE[1] and MAS_RANGE[0] <= ma * ms / 1000 <= MAS_RANGE[1]):
            return (f"ERR,RANGE,kV {KV_RANGE[0]:g}-{KV_RANGE[1]:g} mA {MA_RANGE[0]:g}-{MA_RANGE[1]:g} "
                    f"ms {MS_RANGE[0]:g}-{MS_RANGE[1]:g}")
        with self._lock:
            if self._state in ("READY", "ENABLED", "PREPARING"):
                return f"ERR,STATE,TECH3 while {self._state}"
            self._kvp, self._ma = float(round(kvp)), float(round(ma))
            self._mas = round(self._ma * round(ms, 1) / 1000, 2)
            return self._technique()

    def _technique(self) -> str:
        ms = self._mas / self._ma * 1000
        return f"TECH3,{self._kvp:.1f},{self._ma:.0f},{ms:.1f},{self._mas:.2f}"

    def _gettech(self, args: list[str]) -> str:
        with self._lock:
            return self._technique()

    def _ping(self, args: list[str]) -> str:
        return "PONG"

    def _prep(self, args: list[str]) -> str:
        refusal = self._prepare_refusal()
        if refusal is not None:
            return refusal
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
            if self.heat_percent >= HEAT_LIMIT_PERCENT:
                self._state = "IDLE"
                return f"ERR,HEAT,tube heat {self.heat_percent:.0f} % (limit {HEAT_LIMIT_PERCENT:.0f} %)"
            if self._exp_req is not None and not self._exp_req():
                self._state = "IDLE"
                return "ERR,SYNC,detector not ready (no EXP_OK)"
            kvp = self._kvp * (1 + self._rng.uniform(-0.01, 0.01))
            mas = self._mas * (1 + self._rng.uniform(-0.02, 0.02))
            ma = self._ma * (1 + self._rng.uniform(-0.01, 0.01))
            self._state = "IDLE"
            self.exposures += 1
            self.heat_percent += kvp * mas * HEAT_PER_KV_MAS
        kerma_ugy = self._on_pulse(kvp, mas)
        ms = mas / ma * 1000.0
        dap_dgy_cm2 = kerma_ugy * 1e-6 * 10.0 * self.field_area_cm2  # Gy -> dGy, times cm2
        with self._lock:
            override, self._readback = self._readback, None
        if override is not None:
            return f"DONE,{override}"
        return f"DONE,{kvp:.1f},{mas:.2f},{ms:.1f},{dap_dgy_cm2:.4f},{ma:.1f}"

    def _enable(self, args: list[str]) -> str:
        with self._lock:
            if self._interlock:
                return f"ERR,INTERLOCK,{self._interlock}"
            if self.heat_percent >= HEAT_LIMIT_PERCENT:
                return f"ERR,HEAT,tube heat {self.heat_percent:.0f} % (limit {HEAT_LIMIT_PERCENT:.0f} %)"
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
            return f"STATUS,{self._state},{self._kvp:.1f},{self._mas:.2f},{self.heat_percent:.1f}"

    def _reset(self, args: list[str]) -> str:
        with self._lock:
            if self._state == "READY":
                self._state = "IDLE"
        return "OK"
