"""The field engineer's room: acquire dark and flat frames and make a calibration set."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.config import Config
from gateway.correction import CalibrationSet, Corrector, calibrate
from gateway.events import EventBus
from gateway.hardware import Hardware
from gateway.imaging import ImagePipeline
from gateway.types import Technique

LOGGER = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (step, done, total)


class CalibrationWorkflow:
    def __init__(self, config: Config, hardware: Hardware, pipeline: ImagePipeline, *, events: EventBus | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._config = config
        self._hw = hardware
        self._pipeline = pipeline
        self._events = events or EventBus()
        self._clock = clock

    def calibrate(self, operator: str = "", progress: Progress | None = None) -> CalibrationSet:
        """Acquire dark and flat frames, compute and store a new calibration set, use it."""
        cal_cfg = self._config.calibration
        seq = self._hw.sequence

        def step(name: str, done: int, total: int) -> None:
            self._events.publish("calibration", step=name, done=done, total=total)
            if progress is not None:
                progress(name, done, total)

        darks = []
        for n in range(cal_cfg.dark_frames):
            darks.append(seq.dark())
            step("dark", n + 1, cal_cfg.dark_frames)
        technique = Technique(kvp=cal_cfg.flat_kvp, mas=cal_cfg.flat_mas)
        flats = []
        for n in range(cal_cfg.flat_frames):
            flats.append(seq.expose(technique)[0])
            step("flat", n + 1, cal_cfg.flat_frames)
        cal = calibrate(darks, flats, flat_kerma_ugy=cal_cfg.flat_kerma_ugy, operator=operator,
                        technique=technique, now=self._clock())
        self._pipeline.calibrations.save(cal)
        self._pipeline.use(Corrector(cal))
        self._events.publish("calibration", step="saved", calibration_id=cal.calibration_id)
        LOGGER.info("calibration %s stored and active", cal.calibration_id)
        return cal
