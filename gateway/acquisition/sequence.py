"""One exposure, step by step: prepare -> ready -> expose -> readout.

The detector is armed before the generator fires and the frame is read after; a corrupt
frame surfaces as FrameError (the driver re-reads and never patches). Every state change
is reported to listeners (console, metrics) — notification only, their errors are logged.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.acquisition.readback import check_readback
from gateway.acquisition.state import ExposureState, check_transition
from gateway.alarms import Alarms, Severity
from gateway.errors import ConfigError, GeneratorRefused
from gateway.ports import Detector, Generator
from gateway.types import Exposure, ExposureReadback, FrameKind, RawFrame, Technique

LOGGER = logging.getLogger(__name__)

StateListener = Callable[[ExposureState, str], None]


class ExposureSequence:
    """Drives one detector and one generator through exposures; one exposure at a time."""

    def __init__(self, detector: Detector, generator: Generator, *, frame_timeout_s: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), alarms: Alarms | None = None) -> None:
        if not (math.isfinite(frame_timeout_s) and frame_timeout_s > 0):
            raise ConfigError(f"frame_timeout_s must be a positive finite number, got {frame_timeout_s!r}")
        self._alarms = alarms if alarms is not None else Alarms()
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
        self._go_notify(new, detail)  # a listener must never break an exposure; its errors are logged

    def dark(self) -> RawFrame:
        """Read one dark frame (no X-rays): for offset calibration."""
        with self._lock:
            self._go(ExposureState.READOUT, "dark")
            try:
                self._detector.arm(FrameKind.DARK)
                frame = self._detector.read_frame(self._timeout)
            except BaseException as exc:
                self._fail(exc)
                raise
            self._go(ExposureState.DONE)
            self._go(ExposureState.IDLE)
            return frame

    def expose(self, technique: Technique) -> tuple[RawFrame, Exposure]:
        """Make one exposure and read its frame.

        Before EXPOSE is sent, any failure ends the sequence with no dose. From the moment it
        is sent X-rays may have been delivered, so the frame is read out whatever the generator
        answers — a garbled, missing or absurd readback marks the dose unknown (an alarm) — and
        only a generator's explicit refusal (no X-rays) or a frame that cannot be read ends the
        sequence without a frame. Whatever fails, the state machine returns to IDLE.
        """
        with self._lock:
            self._go(ExposureState.PREPARING, f"{technique.kvp:g} kV {technique.mas:g} mAs")
            try:
                self._generator.set_technique(technique)
                self._generator.prepare()
                self._detector.arm(FrameKind.EXPOSED)
                self._go(ExposureState.READY)
                started = self._clock()
                self._go(ExposureState.EXPOSING)
            except BaseException as exc:
                self._fail(exc)
                raise
            actual: ExposureReadback | None = None
            problems: tuple[str, ...] = ()
            try:
                actual, problems = check_readback(self._generator.expose())
            except GeneratorRefused as exc:  # an explicit ERR: the generator did not fire
                self._fail(exc)
                raise
            except Exception as exc:  # garbled, lost or malformed reply: X-rays may have been given
                problems = (f"dose unknown: {exc}",)
            if problems:
                self._alarms.raise_("dose-unknown" if actual is None else "dose-readback-invalid",
                                    "; ".join(problems) + " (the frame is read out and kept)",
                                    key=f"exposure at {started.isoformat()}")
            try:
                self._go(ExposureState.READOUT)
                frame = self._detector.read_frame(self._timeout)
            except BaseException as exc:
                self._fail(exc)
                raise
            for flag in frame.meta.flags:
                self._alarms.raise_("frame-flagged", flag, key=f"frame {frame.meta.frame_number}",
                                    severity=Severity.WARNING)
            self._go(ExposureState.DONE, f"frame {frame.meta.frame_number}")
            self._go(ExposureState.IDLE)
            return frame, Exposure(requested=technique, actual=actual, started_at=started, problems=problems)

    def _fail(self, exc: BaseException) -> None:
        """FAILED then IDLE, from any state: the sequence never stays stuck mid-exposure."""
        LOGGER.error("exposure failed in state %s: %s", self._state.value, exc)
        try:
            if self._state not in (ExposureState.IDLE, ExposureState.DONE):
                self._go(ExposureState.FAILED, str(exc))
        finally:
            self._state = ExposureState.IDLE
            self._go_notify(ExposureState.IDLE, "")

    def _go_notify(self, new: ExposureState, detail: str) -> None:
        for listener in self._listeners:
            try:
                listener(new, detail)
            except Exception:
                LOGGER.exception("state listener failed on %s", new.value)
