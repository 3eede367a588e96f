"""What an exam reports to the hospital: its procedure step (MPPS) and, at its close, its dose report."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import datetime

from gateway.alarms import Alarms
from gateway.config import Config
from gateway.dicom import XRAY_RADIATION_DOSE_SR
from gateway.exam_types import DOSE_REPORT_PROTOCOL, Exam
from gateway.imaging import ImagePipeline
from gateway.mpps import DISCONTINUATION_REASONS, MppsQueue, Performed, PerformedImage, in_progress
from gateway.mpps import completed as mpps_final

LOGGER = logging.getLogger(__name__)


class ExamReports:
    """The MPPS step is reported at an exam's first image and when it is closed; the dose report at its close."""

    def __init__(self, config: Config, pipeline: ImagePipeline, *, alarms: Alarms, clock: Callable[[], datetime],
                 mpps: MppsQueue | None) -> None:
        self._config = config
        self._pipeline = pipeline
        self._alarms = alarms
        self._clock = clock
        self._mpps = mpps

    def dose(self, exam: Exam, rejected: dict[str, str]) -> bool:
        """The study's dose report, one event per exposure given (rejected ones too); a failure is
        logged and alarmed, never stops the exam from closing. True when it is spooled."""
        events = [dataclasses.replace(e, rejected_reason=rejected.get(e.image_uid)) for e in exam.irradiations]
        try:
            assert exam.detector is not None and exam.pps_start is not None  # set at the first exposure
            self._pipeline.spool_dose_report(
                events, exam.item, detector=exam.detector, study_uid=exam.study_uid, series_uid=exam.dose_series_uid,
                sop_instance_uid=exam.dose_report_uid, started=exam.pps_start, mpps_uid=exam.mpps_uid,
                operator=exam.operator,
                images=[(p.series_uid, p.sop_class_uid, p.sop_instance_uid) for p in exam.performed])
        except Exception as exc:
            LOGGER.error("dose report %s not made: %s: %s", exam.dose_report_uid, type(exc).__name__, exc)
            self._alarms.raise_("dose-report-not-made", f"the dose report of an exam ({len(events)} exposures) could "
                               f"not be made: {type(exc).__name__}: {exc}", key=exam.dose_report_uid)
            return False
        self._alarms.clear("dose-report-not-made", exam.dose_report_uid)
        return True

    def _step(self, exam: Exam) -> Performed:
        site = self._config.site
        assert exam.pps_start is not None
        return Performed(item=exam.item, study_uid=exam.study_uid, pps_id=exam.pps_id, start=exam.pps_start,
                         station_ae=site.ae_title, station_name=site.station_name, operator=exam.operator)

    def step_started(self, exam: Exam) -> None:
        """At the exam's first saved image: its step's N-CREATE (IN PROGRESS) is queued."""
        if self._mpps is None or exam.mpps_created or not exam.mpps_uid:
            return
        self._mpps.add(exam.mpps_uid, "create", in_progress(self._step(exam)), time.time())
        exam.mpps_created = True

    def step_ended(self, exam: Exam, rejected: set[str], *, completed: bool, reason: str,
                   dose_report: bool = False) -> None:
        """No image, no step: an exam closed before any exposure reports nothing. With
        `dose_report` the step lists the study's dose report too (IHE REM)."""
        if self._mpps is None or not exam.mpps_created:
            return
        images = [dataclasses.replace(p, rejected=p.sop_instance_uid in rejected) for p in exam.performed]
        key = None if completed else (reason if reason in DISCONTINUATION_REASONS else "unspecified")
        exposures = [e.exposure for e in exam.irradiations]  # every pulse given, an image made of it or not
        reports = [PerformedImage(series_uid=exam.dose_series_uid, sop_class_uid=XRAY_RADIATION_DOSE_SR,
                                  sop_instance_uid=exam.dose_report_uid, protocol_name=DOSE_REPORT_PROTOCOL)
                   ] if dose_report else []
        self._mpps.add(exam.mpps_uid, "set", mpps_final(self._step(exam), images, self._clock(), discontinued=key,
                                                        exposures=exposures, non_images=reports),
                       time.time())
