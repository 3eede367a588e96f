"""One exposure, step by step: prepare -> ready -> expose -> readout.

The detector is armed before the generator fires and the frame is read after; a corrupt
frame surfaces as FrameError (the driver re-reads and never patches). Every state change
is reported to listeners (console, metrics) — notification only, their errors are logged.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.acquisition.readback import check_readback
from gateway.acquisition.state import ExposureState, check_transition
from gateway.alarms import Alarms, Severity
from gateway.errors import ConfigError, DxgateError, GeneratorError, GeneratorRefused
from gateway.ports import Detector, Generator, HandSwitch
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
        """Make one exposure by software trigger (calibration, QA, service) and read its frame.

        Before EXPOSE is sent, any failure ends the sequence with no dose. From the moment it
        is sent X-rays may have been delivered, so the frame is read out whatever the generator
        answers — a garbled, missing or absurd readback marks the dose unknown (an alarm) — and
        only a generator's explicit refusal (no X-rays) or a frame that cannot be read ends the
        sequence without a frame. Whatever fails, the state machine returns to IDLE.
        """
        with self._lock:
            self._prepare(technique, self._generator.prepare)
            started = self._clock()
            self._go(ExposureState.EXPOSING)
            return self._after_dose(technique, started, self._generator.expose)

    def expose_on_hand_switch(self, technique: Technique, cancel: threading.Event, poll_s: float = 0.25,
                              check: Callable[[], object] | None = None,
                              recheck_s: float = 5.0) -> tuple[RawFrame, Exposure] | None:
        """Arm, release one exposure to the technologist's hand switch and wait for it.

        Returns None when `cancel` is set before the hand switch fired (no X-rays: the release is
        withdrawn). While the release waits, `check` (everything that could refuse the image) runs
        every `recheck_s`: a refusal withdraws the release and is raised (ExposureRefused), so a
        release armed before midnight cannot fire after its calibration expired. An exposure that
        races the withdrawal is still read out and returned.
        """
        generator = self._generator
        if not isinstance(generator, HandSwitch):
            raise GeneratorRefused("this generator has no hand-switch release; use the software trigger")
        with self._lock:
            self._prepare(technique, generator.enable_hand_switch, arm_first=True, detail="waiting for the hand switch")
            readback: ExposureReadback | None = None
            refusal: DxgateError | None = None
            error: Exception | None = None
            try:
                readback, refusal = self._await_press(generator, cancel, poll_s, check, recheck_s)
            except GeneratorRefused as exc:  # the generator says it did not fire
                self._fail(exc)
                raise
            except Exception as exc:  # garbled or lost line while released: X-rays may have been given
                error = exc
            if readback is None and error is None:  # withdrawn, the panel disarmed: no X-rays
                self._go(ExposureState.IDLE, "release withdrawn, no exposure")
                if refusal is not None:
                    raise refusal
                return None
            started = self._clock()
            self._go(ExposureState.EXPOSING)

            def delivered() -> ExposureReadback:
                if error is not None:
                    raise error
                assert readback is not None
                return readback

            return self._after_dose(technique, started, delivered)

    def _await_press(self, generator: HandSwitch, cancel: threading.Event, poll_s: float,
                     check: Callable[[], object] | None,
                     recheck_s: float) -> tuple[ExposureReadback | None, DxgateError | None]:
        """The readback of the hand switch's exposure; or (None, why) once the release is withdrawn
        (cancel set, or `check` refused) with the panel disarmed. Errors mean X-rays may have been given."""
        next_check = time.monotonic() + recheck_s
        while True:
            refusal: DxgateError | None = None
            if check is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + recheck_s
                try:
                    check()
                except DxgateError as exc:
                    refusal = exc
            if cancel.is_set() or refusal is not None:
                readback = generator.disable_hand_switch()
                if readback is not None:  # the hand switch fired first: the dose is given
                    return readback, None
                try:
                    self._detector.disarm()
                except DxgateError as exc:  # the panel saw X-rays the generator did not report
                    raise GeneratorError(f"the panel refused to disarm ({exc}): X-rays reached it "
                                         "after the release was withdrawn") from exc
                return None, refusal
            readback = generator.wait_hand_switch(poll_s)
            if readback is not None:
                return readback, None

    def _prepare(self, technique: Technique, release: Callable[[], None], *, arm_first: bool = False,
                 detail: str = "") -> None:
        """Technique, arm, release (prepare or hand-switch enable): any failure here is before any dose.
        With the hand switch the panel integrates before the generator may fire (`arm_first`)."""
        self._go(ExposureState.PREPARING, f"{technique.kvp:g} kV {technique.mas:g} mAs")
        try:
            self._generator.set_technique(technique)
            if arm_first:
                self._detector.arm(FrameKind.EXPOSED)
            release()
            if not arm_first:
                self._detector.arm(FrameKind.EXPOSED)
            self._go(ExposureState.READY, detail)
        except BaseException as exc:
            self._fail(exc)
            raise

    def _after_dose(self, technique: Technique, started: datetime,
                    readback: Callable[[], ExposureReadback]) -> tuple[RawFrame, Exposure]:
        """From the moment X-rays may have been given: read the frame out whatever the readback is."""
        actual: ExposureReadback | None = None
        problems: tuple[str, ...] = ()
        try:
            actual, problems = check_readback(readback())
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
