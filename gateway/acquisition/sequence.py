"""One exposure, step by step: prepare -> ready -> expose -> readout.

The detector is armed before the generator fires and the frame is read after; a corrupt
frame surfaces as FrameError (the driver re-reads and never patches). Every state change
is reported to listeners (console, metrics) — notification only, their errors are logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.acquisition.state import ExposureState, check_transition
from gateway.errors import DxgateError
from gateway.ports import Detector, Generator
from gateway.types import Exposure, FrameKind, RawFrame, Technique

LOGGER = logging.getLogger(__name__)

StateListener = Callable[[ExposureState, str], None]


class ExposureSequence:
    """Drives one detector and one generator through exposures; one exposure at a time."""

    def __init__(self, detector: Detector, generator: Generator, *, frame_timeout_s: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._detector = detector
        self._generator = generator
        self._timeout = frame_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = ExposureState.IDLE
        self._listeners: list[StateListener] = []

    @property
    def state(self) -> ExposureState:
        return self._state

    def subscribe(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def _go(self, new: ExposureState, detail: str = "") -> None:
        check_transition(self._state, new)
        self._state = new
        for listener in self._listeners:
            try:
                listener(new, detail)
            except Exception:  # a listener must never break an exposure; log it loudly
                LOGGER.exception("state listener failed on %s", new.value)

    def dark(self) -> RawFrame:
        """Read one dark frame (no X-rays): for offset calibration."""
        with self._lock:
            self._go(ExposureState.READOUT, "dark")
            try:
                self._detector.arm(FrameKind.DARK)
                frame = self._detector.read_frame(self._timeout)
            except DxgateError as exc:
                self._go(ExposureState.FAILED, str(exc))
                self._go(ExposureState.IDLE)
                raise
            self._go(ExposureState.DONE)
            self._go(ExposureState.IDLE)
            return frame

    def expose(self, technique: Technique) -> tuple[RawFrame, Exposure]:
        """Make one exposure and read its frame."""
        with self._lock:
            self._go(ExposureState.PREPARING, f"{technique.kvp:g} kV {technique.mas:g} mAs")
            try:
                self._generator.set_technique(technique)
                self._generator.prepare()
                self._detector.arm(FrameKind.EXPOSED)
                self._go(ExposureState.READY)
                started = self._clock()
                self._go(ExposureState.EXPOSING)
                actual = self._generator.expose()
                self._go(ExposureState.READOUT)
                frame = self._detector.read_frame(self._timeout)
            except DxgateError as exc:
                LOGGER.error("exposure failed in state %s: %s", self._state.value, exc)
                self._go(ExposureState.FAILED, str(exc))
                self._go(ExposureState.IDLE)
                raise
            self._go(ExposureState.DONE, f"frame {frame.meta.frame_number}")
            self._go(ExposureState.IDLE)
            return frame, Exposure(requested=technique, actual=actual, started_at=started)
