"""The field engineer's room: guided calibration (darks, checked flats, lag) and detector QA.

The steps tell the engineer what to do (`Prompt`), report progress while frames are taken,
and hand each refused flat to `on_bad_frame`, which decides whether it is taken again. The CLI
(`dxgate calibrate`, `dxgate qa`) and the daemon API call the same code.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import Config
from gateway.correction import CalibrationBuilder, CalibrationLimits, CalibrationSet, Corrector, refresh_offset
from gateway.errors import CalibrationError
from gateway.events import EventBus
from gateway.hardware import Hardware
from gateway.imaging import ImagePipeline
from gateway.qa import QaLimits, QaReport, evaluate, history, linearity
from gateway.qa.html import render
from gateway.types import RawFrame, Technique

LOGGER = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (step, done, total)
Prompt = Callable[[str, str], None]  # (step, instruction): returns once the engineer is ready
BadFrame = Callable[[str, CalibrationError], bool]  # (step, why): True to take the frame again

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
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._config = config
        self._hw = hardware
        self._pipeline = pipeline
        self._events = events or EventBus()
        self._clock = clock

    def calibrate(self, operator: str = "", progress: Progress | None = None, *, prompt: Prompt | None = None,
                  on_bad_frame: BadFrame | None = None) -> CalibrationSet:
        """Acquire darks, checked flats and lag darks, compute and store a new calibration set, use it."""
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
        cal = builder.build(flat_kerma_ugy=cal_cfg.flat_kerma_ugy, operator=operator, technique=technique,
                            now=self._clock())
        self._pipeline.calibrations.save(cal)
        self._pipeline.use(Corrector(cal))
        self._events.publish("calibration", step="saved", calibration_id=cal.calibration_id)
        LOGGER.info("calibration %s stored and active", cal.calibration_id)
        return cal

    def refresh_offset(self, progress: Progress | None = None) -> CalibrationSet:
        """Fresh darks renew the newest set's offset map (a new set version, same gain and defects):
        for the idle room, no engineer needed. Refused, keeping the old set, when the darks saw light."""
        cal_cfg = self._config.calibration
        cal = self._pipeline.calibrations.load(self._hw.calibration_key)
        step = self._stepper(progress)

        def darks() -> Iterator[RawFrame]:
            for n in range(cal_cfg.dark_frames):
                yield self._hw.sequence.dark()
                step("dark", n + 1, cal_cfg.dark_frames)

        new = refresh_offset(cal, darks(), now=self._clock(),
                             limits=CalibrationLimits(**cal_cfg.limits.model_dump()))
        self._pipeline.calibrations.save(new)
        self._pipeline.use(Corrector(new))
        self._events.publish("calibration", step="offset-refreshed", calibration_id=new.calibration_id)
        return new

    def qa(self, progress: Progress | None = None, *, prompt: Prompt | None = None,
           html_path: Path | None = None) -> QaReport:
        """Flats corrected with the newest calibration, measured (AAPM TG-150) against the QA limits."""
        cal_cfg = self._config.calibration
        cal = self._pipeline.calibrations.load(self._hw.calibration_key)
        corrector = Corrector(cal)
        step = self._stepper(progress)
        if prompt is not None:
            prompt("qa", flat_instruction(self._config))
        technique = Technique(kvp=cal_cfg.flat_kvp, mas=cal_cfg.flat_mas)
        images = []
        for n in range(cal_cfg.qa_flat_frames):
            images.append(corrector.apply(self._hw.sequence.expose(technique)[0]).pixels)
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
        self._events.publish("qa", calibration_id=cal.calibration_id, passed=report.passed)
        LOGGER.info("QA report %s: %s", path, "pass" if report.passed else "FAIL")
        if html_path is not None:
            html_path.write_text(render(report, cal, images[0]), encoding="utf-8")
        return report

    def _stepper(self, progress: Progress | None) -> Progress:
        def step(name: str, done: int, total: int) -> None:
            self._events.publish("calibration", step=name, done=done, total=total)
            if progress is not None:
                progress(name, done, total)
        return step
