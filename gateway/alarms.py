"""Alarms: conditions an operator must see, raised by any stage, kept until cleared.

A stage that meets something it cannot fix by itself (a dose of unknown size, a frame
counter gap, a forwarding pass that failed, a frame kept raw because its image could not
be made) raises an alarm here. Each alarm is logged once at ERROR (or WARNING), counted by
code, and listed until cleared; the console, the status command and the metrics read this
list. Messages carry no patient data: identifiers of frames and instances only.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

LOGGER = logging.getLogger(__name__)


class Severity(enum.StrEnum):
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Alarm:
    code: str  # stable machine-readable name, e.g. "dose-unknown"
    message: str  # what happened and what to do, no patient data
    severity: Severity
    raised_at: float  # epoch seconds
    key: str = ""  # what it is about (a frame, a destination), so the same alarm is not doubled


AlarmListener = Callable[[Alarm], None]


class Alarms:
    """Thread-safe list of active alarms and a count of every alarm ever raised, by code."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], Alarm] = {}
        self.raised: Counter[str] = Counter()
        self._listeners: list[AlarmListener] = []

    def subscribe(self, listener: AlarmListener) -> None:
        self._listeners.append(listener)

    def raise_(self, code: str, message: str, *, key: str = "",
               severity: Severity = Severity.ERROR) -> Alarm:
        """Raise (or refresh) the alarm `code` about `key`; log it and tell the listeners."""
        alarm = Alarm(code=code, message=message, severity=severity, raised_at=self._clock(), key=key)
        with self._lock:
            self._active[(code, key)] = alarm
            self.raised[code] += 1
        LOGGER.log(logging.ERROR if severity is Severity.ERROR else logging.WARNING,
                   "ALARM %s%s: %s", code, f" [{key}]" if key else "", message)
        for listener in self._listeners:
            try:
                listener(alarm)
            except Exception:  # a listener must never break the stage that raised the alarm
                LOGGER.exception("alarm listener failed on %s", code)
        return alarm

    def clear(self, code: str, key: str = "") -> bool:
        """Clear one alarm; returns whether it was active."""
        with self._lock:
            return self._active.pop((code, key), None) is not None

    def active(self, code: str | None = None) -> list[Alarm]:
        with self._lock:
            alarms = list(self._active.values())
        return sorted((a for a in alarms if code is None or a.code == code), key=lambda a: a.raised_at)
