"""The field engineer's room: guided calibration (darks, checked flats, lag) and detector QA.

The steps tell the engineer what to do (`Prompt`), report progress while frames are taken,
and hand each refused flat to `on_bad_frame`, which decides whether it is taken again. The CLI
(`dxgate calibrate`, `dxgate qa`) and the daemon API call the same code. A calibration made
`pending` (the console's wizard) is checked with fresh flats and kept aside, unused, until the
engineer accepts it (then the next exposure uses it) or discards it; both are audited.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from gateway.audit.messages import SOFTWARE_CONFIGURATION, AuditEvent, Outcome, security_alert
from gateway.config import Config
from gateway.correction import CalibrationBuilder, CalibrationLimits, CalibrationSet, Corrector, refresh_offset
from gateway.correction.store import PendingCalibrations
from gateway.durable import fsync_dir, write_new_file
from gateway.errors import CalibrationError
from gateway.events import EventBus
from gateway.hardware import Hardware
from gateway.imaging import ImagePipeline
from gateway.qa import QaLimits, QaReport, evaluate, history, linearity
from gateway.qa.html import render
from gateway.qa_dicom import save_qa_flats
from gateway.types import RawFrame, Technique

LOGGER = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (step, done, total)
Prompt = Callable[[str, str], None]  # (step, instruction): returns once the engineer is ready
BadFrame = Callable[[str, CalibrationError], bool]  # (step, why): True to take the frame again
Audit = Callable[[AuditEvent, str], object]  # (event, user): records a privileged action

class RefreshAbandoned(CalibrationError):
    """An offset refresh stopped because the room was needed; the set in use stays."""


MAX_REPEATS = 3  # refused flats taken again in a row before the calibration gives up


def dark_instruction() -> str:
    return "Dark frames: make sure the X-ray tube is off and no light reaches the detector."


def flat_instruction(config: Config) -> str:
    c = config.calibration
    return (f"Flat fields: remove all objects from the beam and open the collimator to the whole detector; "
            f"set {c.flat_kvp:g} kV, {c.flat_mas:g} mAs, at the distance where the detector receives "
            f"{c.flat_kerma_ugy:g} uGy; then expose.")


class CalibrationWorkflow:
    def __init__(self, config: Config, hardware: Hardware, pipeline: ImagePipeline, *, events: EventBus | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), audit: Audit | None = None) -> None:
        self._config = config
        self._hw = hardware
        self._pipeline = pipeline
        self._events = events or EventBus()
        self._clock = clock
        self._audit = audit
        self.pending = PendingCalibrations(pipeline.calibrations)
        left = self.pending.pending_id(hardware.calibration_key)
        if left is not None:  # kept across the restart: still the engineer's to accept or discard
            LOGGER.info("calibration %s is pending: accept or discard it in the console", left)

    def calibrate(self, operator: str = "", progress: Progress | None = None, *, prompt: Prompt | None = None,
                  on_bad_frame: BadFrame | None = None, pending: bool = False) -> CalibrationSet:
        """Acquire darks, checked flats and lag darks, compute and store a new calibration set, use it.
        With `pending`, QA flats are taken with the new set and it is kept pending (see `accept`)."""
        cal_cfg = self._config.calibration
        seq = self._hw.sequence
        step = self._stepper(progress)
        builder = CalibrationBuilder(CalibrationLimits(**cal_cfg.limits.model_dump()))
        if prompt is not None:
            prompt("dark", dark_instruction())
        for n in range(cal_cfg.dark_frames):
            builder.add_dark(seq.dark())
            step("dark", n + 1, cal_cfg.dark_frames)
        builder.darks_done()
        technique = Technique(kvp=cal_cfg.flat_kvp, mas=cal_cfg.flat_mas)
        if prompt is not None:
            prompt("flat", flat_instruction(self._config))
        done = repeats = 0
        while done < cal_cfg.flat_frames:
            try:
                builder.add_flat(seq.expose(technique)[0])
            except CalibrationError as exc:
                repeats += 1
                LOGGER.warning("flat-field frame refused: %s", exc)
                self._events.publish("calibration", step="flat-refused", reason=str(exc))
                if repeats > MAX_REPEATS or on_bad_frame is None or not on_bad_frame("flat", exc):
                    raise
                continue
            done, repeats = done + 1, 0
            step("flat", done, cal_cfg.flat_frames)
        for n in range(cal_cfg.lag_dark_frames):  # right after the last flat: what is left is lag
            builder.add_lag_dark(seq.dark())
            step("lag", n + 1, cal_cfg.lag_dark_frames)
        self._gain_levels(builder, step, on_bad_frame)
        cal = builder.build(flat_kerma_ugy=cal_cfg.flat_kerma_ugy, operator=operator, technique=technique,
                            now=self._clock())
        if pending:
            qa = self._pending_qa(cal, step)
            self.pending.save(cal, qa.to_dict())
            self._events.publish("calibration", step="pending", calibration_id=cal.calibration_id,
                                 passed=qa.passed)
            LOGGER.info("calibration %s stored, pending the engineer's decision (QA %s)", cal.calibration_id,
                        "pass" if qa.passed else "FAIL")
            return cal
        self._pipeline.calibrations.save(cal)
        self._pipeline.use(Corrector(cal))
        self._events.publish("calibration", step="saved", calibration_id=cal.calibration_id)
        LOGGER.info("calibration %s stored and active", cal.calibration_id)
        return cal

    def _pending_qa(self, cal: CalibrationSet, step: Progress) -> QaReport:
        """TG-150 figures of fresh flats corrected with the new set, against the QA limits."""
        cal_cfg = self._config.calibration
        corrector = Corrector(cal)
        technique = Technique(kvp=cal_cfg.flat_kvp, mas=cal_cfg.flat_mas)
        images = []
        for n in range(cal_cfg.qa_flat_frames):
            images.append(corrector.apply(self._hw.sequence.expose(technique)[0]).pixels)
            step("qa", n + 1, cal_cfg.qa_flat_frames)
        return evaluate(images, cal, QaLimits(**cal_cfg.qa_limits.model_dump()), made_at=self._clock())

    def accept(self, calibration_id: str, user: str) -> CalibrationSet:
        """The pending set `calibration_id` becomes the set in use (the next exposure uses it)."""
        key = self._hw.calibration_key
        try:
            cal = self.pending.accept(key, calibration_id)
        except CalibrationError as exc:
            self._record(user, f"calibration {calibration_id} not accepted: {exc}", ok=False)
            raise
        self._pipeline.use(Corrector(cal))
        self._record(user, f"calibration {calibration_id} accepted and in use for detector "
                           f"{key.detector_serial} mode {key.mode}")
        self._events.publish("calibration", step="accepted", calibration_id=calibration_id)
        return cal

    def discard(self, calibration_id: str, user: str) -> None:
        """The pending set `calibration_id` is deleted; the set in use stays."""
        key = self._hw.calibration_key
        try:
            self.pending.discard(key, calibration_id)
        except CalibrationError as exc:
            self._record(user, f"calibration {calibration_id} not discarded: {exc}", ok=False)
            raise
        self._record(user, f"pending calibration {calibration_id} discarded")
        self._events.publish("calibration", step="discarded", calibration_id=calibration_id)

    def _record(self, user: str, what: str, *, ok: bool = True) -> None:
        if self._audit is None:
            return
        try:
            self._audit(security_alert(SOFTWARE_CONFIGURATION, who=user,
                                       outcome=Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
                                       when=self._clock(), description=what), user)
        except Exception:  # the action is done; a lost record is an error in the log, never a crash
            LOGGER.exception("audit record of a calibration decision could not be written")

    def _gain_levels(self, builder: CalibrationBuilder, step: Progress, on_bad_frame: BadFrame | None) -> None:
        """Flats at each further dose level of a multi-point gain (none configured: nothing). A
        level's air kerma is the reference's scaled by its mAs (it orders the levels and is
        recorded; each level is corrected to the panel's measured mean signal)."""
        cal_cfg = self._config.calibration
        factors = sorted(set(cal_cfg.gain_dose_factors))
        total = len(factors) * cal_cfg.gain_level_frames
        done = 0
        for factor in factors:
            technique = Technique(kvp=cal_cfg.flat_kvp, mas=cal_cfg.flat_mas * factor)
            taken = repeats = 0
            while taken < cal_cfg.gain_level_frames:
                frame, _ = self._hw.sequence.expose(technique)
                try:
                    builder.add_level_flat(frame, round(cal_cfg.flat_kerma_ugy * factor, 6))
                except CalibrationError as exc:
                    repeats += 1
                    LOGGER.warning("flat-field frame at %g x flat mAs refused: %s", factor, exc)
                    self._events.publish("calibration", step="flat-refused", reason=str(exc))
                    if repeats > MAX_REPEATS or on_bad_frame is None or not on_bad_frame("gain-level", exc):
                        raise
                    continue
                taken, repeats, done = taken + 1, 0, done + 1
                step("gain-level", done, total)

    def refresh_offset(self, progress: Progress | None = None, *,
                       abort: Callable[[], bool] | None = None) -> CalibrationSet:
        """Fresh darks renew the newest set's offset map (a new set version, same gain and defects):
        for the idle room, no engineer needed. Refused, keeping the old set, when the darks saw light;
        RefreshAbandoned, keeping it too, when `abort` says so before a dark frame (an exam armed)."""
        cal_cfg = self._config.calibration
        cal = self._pipeline.calibrations.load(self._hw.calibration_key)
        step = self._stepper(progress)

        def darks() -> Iterator[RawFrame]:
            for n in range(cal_cfg.dark_frames):
                if abort is not None and abort():
                    raise RefreshAbandoned(f"offset refresh abandoned after {n} of {cal_cfg.dark_frames} dark "
                                           "frames: the room is in use")
                yield self._hw.sequence.dark()
                step("dark", n + 1, cal_cfg.dark_frames)

        new = refresh_offset(cal, darks(), now=self._clock(),
                             limits=CalibrationLimits(**cal_cfg.limits.model_dump()))
        self._pipeline.calibrations.save(new)
        self._pipeline.use(Corrector(new))
        self._events.publish("calibration", step="offset-refreshed", calibration_id=new.calibration_id)
        return new

    def qa(self, progress: Progress | None = None, *, prompt: Prompt | None = None,
           html_path: Path | None = None, dicom_dir: Path | None = None) -> QaReport:
        """Flats corrected with the newest calibration, measured (AAPM TG-150) against the QA limits;
        with `dicom_dir` the flats are also saved there as DX For Processing images."""
        cal_cfg = self._config.calibration
        cal = self._pipeline.calibrations.load(self._hw.calibration_key)
        corrector = Corrector(cal)
        step = self._stepper(progress)
        if prompt is not None:
            prompt("qa", flat_instruction(self._config))
        technique = Technique(kvp=cal_cfg.flat_kvp, mas=cal_cfg.flat_mas)
        images = []
        flats = []
        for n in range(cal_cfg.qa_flat_frames):
            raw, exposure = self._hw.sequence.expose(technique)
            corrected = corrector.apply(raw)
            images.append(corrected.pixels)
            if dicom_dir is not None:
                flats.append((corrected, exposure))
            step("qa", n + 1, cal_cfg.qa_flat_frames)
        doses = sorted(set(cal_cfg.qa_dose_factors))
        response = None
        if len(doses) >= 2:  # the same open field at several mAs: the response must be a line through 0
            points = []
            for n, factor in enumerate(doses):
                t = Technique(kvp=cal_cfg.flat_kvp, mas=cal_cfg.flat_mas * factor)
                frame, exposure = self._hw.sequence.expose(t)
                # The generator's readback is what was delivered; the request when it gave none.
                delivered = exposure.actual.mas if exposure.dose_known and exposure.actual else None
                points.append((delivered or t.mas, corrector.apply(frame).pixels))
                step("linearity", n + 1, len(doses))
            response = linearity(points)
        report = evaluate(images, cal, QaLimits(**cal_cfg.qa_limits.model_dump()), made_at=self._clock(),
                          linearity=response)
        kept = self._config.path(cal_cfg.qa_directory)
        before = history.earlier(kept, cal.key.detector_serial, cal.key.mode)
        report = dataclasses.replace(report, trend=history.trend(report.to_dict()["checks"], before))
        path = history.save(kept, report.to_dict())
        page = render(report, cal, images[0]).encode("utf-8")
        write_new_file(path.with_suffix(".html"), page, mode=0o644)  # the console's QA viewer shows it
        fsync_dir(path.parent)
        self._events.publish("qa", calibration_id=cal.calibration_id, passed=report.passed)
        LOGGER.info("QA report %s: %s", path, "pass" if report.passed else "FAIL")
        if html_path is not None:
            html_path.write_bytes(page)
        if dicom_dir is not None:
            save_qa_flats(dicom_dir, flats, config=self._config, detector=self._hw.detector.info,
                          pixel_spacing_mm=self._hw.mode.pixel_spacing_mm, now=self._clock())
        return report

    def _stepper(self, progress: Progress | None) -> Progress:
        def step(name: str, done: int, total: int) -> None:
            self._events.publish("calibration", step=name, done=done, total=total)
            if progress is not None:
                progress(name, done, total)
        return step
