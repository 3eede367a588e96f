"""Idle offset refresh: the schedule that renews the offset map while the room is idle.

The offset drifts with temperature and time; dark frames need no engineer and no X-rays.
Every `interval` after the newest set was made (a refresh makes a new one), once nobody has
used the room for `idle`, the refresh runs; `busy` (an exam open or armed, an exposure under
way) stops it before its next dark frame and the set in use stays. A failed or abandoned
refresh is tried again one interval later. The daemon calls `run` on a thread of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.correction import CalibrationSet
from gateway.errors import DxgateError

if TYPE_CHECKING:
    from gateway.app import Gateway

LOGGER = logging.getLogger(__name__)

POLL_S = 30.0  # how often the daemon's thread looks at the room

Refresh = Callable[[Callable[[], bool]], CalibrationSet]  # (abort) -> the new set


class OffsetRefresh:
    """Decides when to refresh; `tick()` does at most one refresh and says which set it made."""

    def __init__(self, refresh: Refresh, *, busy: Callable[[], bool], last_made: Callable[[], datetime | None],
                 interval: timedelta, idle: timedelta, clock: Callable[[], datetime]) -> None:
        if interval <= timedelta(0):
            raise ValueError(f"offset refresh interval must be positive, got {interval}")
        self._refresh = refresh
        self._busy = busy
        self._last_made = last_made
        self.interval = interval
        self.idle = idle
        self._clock = clock
        self._last_busy = clock()  # a room just started is not known to be idle
        self._last_attempt: datetime | None = None
        self.refreshed = 0
        self.abandoned = 0

    def due(self) -> bool:
        """Whether a refresh should start now (and the room is idle)."""
        now = self._clock()
        if self._busy():
            self._last_busy = now
            return False
        if now - self._last_busy < self.idle:
            return False
        made = self._last_made()
        if made is None:  # nothing to refresh: the panel needs a full calibration first
            return False
        since = max(made, self._last_attempt) if self._last_attempt is not None else made
        return now - since >= self.interval

    def tick(self) -> CalibrationSet | None:
        if not self.due():
            return None
        self._last_attempt = self._clock()
        try:
            new = self._refresh(self._busy)
        except DxgateError as exc:
            self.abandoned += 1
            LOGGER.warning("idle offset refresh not done (the set in use stays): %s", exc)
            return None
        self.refreshed += 1
        LOGGER.info("idle offset refresh: %s", new.calibration_id)
        return new

    def run(self, stop: threading.Event, poll_s: float = POLL_S) -> None:
        """Tick until `stop` is set (the daemon's thread); never dies of one failure."""
        while not stop.wait(poll_s):
            try:
                self.tick()
            except Exception:  # the next round may succeed
                LOGGER.exception("idle offset refresh failed unexpectedly")


def for_gateway(gw: Gateway) -> OffsetRefresh | None:
    """The refresh schedule of a running gateway, from its configuration; None when it is off."""
    cfg = gw.config.calibration
    if not cfg.offset_refresh_h:
        return None
    exams = gw.exams

    def busy() -> bool:
        return exams.current is not None or exams.armed

    def last_made() -> datetime | None:
        try:
            return gw.corrector().cal.created_at
        except DxgateError:  # no valid set: a refresh cannot make one
            return None

    return OffsetRefresh(lambda abort: gw.calibration.refresh_offset(abort=abort), busy=busy, last_made=last_made,
                         interval=timedelta(hours=cfg.offset_refresh_h),
                         idle=timedelta(minutes=cfg.offset_refresh_idle_min), clock=gw.now)
