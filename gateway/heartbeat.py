"""Heartbeats: each stage says it is alive; the watchdog pings systemd only while all are fresh."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Heartbeats:
    """Thread-safe registry of stages, each with the longest silence it may keep."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._limits: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def register(self, name: str, max_silence_s: float) -> None:
        with self._lock:
            self._limits[name] = max_silence_s
            self._last[name] = self._clock()

    def beat(self, name: str) -> None:
        with self._lock:
            if name in self._limits:
                self._last[name] = self._clock()

    def ages(self) -> dict[str, float]:
        now = self._clock()
        with self._lock:
            return {name: now - t for name, t in self._last.items()}

    def stale(self) -> list[str]:
        """The stages silent for longer than they may be."""
        now = self._clock()
        with self._lock:
            return sorted(n for n, t in self._last.items() if now - t > self._limits[n])
