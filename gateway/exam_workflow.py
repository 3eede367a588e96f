"""The technologist's room: exams, the view chosen for each exposure, and exposures themselves.

Everything that could refuse an image is checked before the tube fires (ExposureRefused: no
dose). From the EXPOSE command on, the frame is kept whatever fails — first durably as a raw
record, then as an image — and a failure after the dose raises FrameKeptError naming the kept
frame, which `reprocess` turns into its image once the cause is fixed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from gateway.acquisition.raw_store import RawStoreError
from gateway.alarms import Alarms
from gateway.closed_exams import ClosedExam, ClosedExams
from gateway.config import Config, ProtocolConfig
from gateway.correction import Corrector, check_validity
from gateway.dicom import XRAY_RADIATION_DOSE_SR, IrradiationEvent, check_anatomy, irradiation_event_uid, new_uid
from gateway.dicom.dx import DX_FOR_PRESENTATION, DX_FOR_PROCESSING
from gateway.dicom.preview import preview_png
from gateway.errors import ConfigError, DxgateError, ExposureRefused, FrameKeptError
from gateway.events import EventBus
from gateway.hardware import Hardware
from gateway.imaging import ImageContext, ImagePipeline
from gateway.mpps import DISCONTINUATION_REASONS, MppsQueue, Performed, PerformedImage, in_progress
from gateway.mpps import completed as mpps_final
from gateway.rejection import apply_verdict
from gateway.review_stats import ReviewLog, record_of
from gateway.types import (
    Anatomy,
    CorrectedFrame,
    DetectorInfo,
    Exposure,
    ExposureIndex,
    RawFrame,
    SpooledInstance,
    Technique,
    WorklistItem,
)
from gateway.worklist.cache import text_problem
from gateway.worklist.text import UndecodableText, check_text

LOGGER = logging.getLogger(__name__)

# Techniques outside these are refused before the tube fires (the configuration's own bounds).
KVP_RANGE = (40.0, 150.0)
MAS_RANGE = (0.1, 500.0)


@dataclass
class Exam:
    """One procedure at the console: its study and series identity, assigned once."""

    item: WorklistItem | None
    study_uid: str
    series_uid: str
    series_number: int = 1
    images: list[SpooledInstance] = field(default_factory=list)
    operator: str = ""  # the technologist who opened it (Operators' Name)
    pps_id: str = ""  # Performed Procedure Step ID (SH), assigned at opening
    pps_start: datetime | None = None  # set at the first exposure: every image of the step agrees
    mpps_uid: str = ""  # the MPPS SOP Instance UID when MPPS is reported ("" otherwise)
    mpps_created: bool = False  # its N-CREATE is queued (at the first saved image)
    performed: list[PerformedImage] = field(default_factory=list)  # every exposure's image, for the N-SET
    irradiations: list[IrradiationEvent] = field(default_factory=list)  # every exposure given, for the dose report
    dose_series_uid: str = ""  # the dose report's series and SOP Instance UIDs, assigned at opening
    dose_report_uid: str = ""
    detector: DetectorInfo | None = None  # the detector of its exposures (the dose report's equipment)
    reopened: bool = False  # the append case: a closed exam's study opened again (a new series)


@dataclass(frozen=True)
class AcquiredImage:
    """An exposure that is saved: durable in the spool, queued for every destination."""

    instance: SpooledInstance
    exposure: Exposure
    exposure_index: ExposureIndex | None  # None: not computable (e.g. saturated centre); image kept
    frame: CorrectedFrame
    stage_seconds: dict[str, float]  # acquire, keep, correct, present, build, spool: where the latency goes
    kept_id: str = ""  # the raw record kept through the image's making ("" if it could not be written)
    display: np.ndarray | None = None  # the processed For Presentation pixels, when processing is on
    processing_uid: str = ""  # the exposure's DX For Processing image, when one was saved


@dataclass(frozen=True)
class ViewChoice:
    """The view the technologist selected for the next exposures of the open exam."""

    anatomy: Anatomy
    technique: Technique
    target_ei: float
    protocol: str = ""  # the protocol table's name, when chosen from it


@dataclass
class ReviewedImage:
    """An image of the open exam and the technologist's verdict on it. The exam keeps what the
    console shows (a PNG preview, for the latest PREVIEWS_KEPT images), never the full frame, so
    memory stays flat however many exposures an exam takes."""

    instance: SpooledInstance
    exposure: Exposure
    exposure_index: ExposureIndex | None
    view: ViewChoice
    preview: bytes | None = None
    status: str = "new"  # new, accepted, rejected
    reason: str = ""
    processing_uid: str = ""  # the same exposure's For Processing image: the verdict is the exposure's


PREVIEWS_KEPT = 32
DOSE_REPORT_PROTOCOL = "X-Ray Radiation Dose Report"  # the dose report's series in the MPPS (Protocol Name, Type 1)
RECHECK_S = 5.0  # how often a release waiting for the hand switch re-checks that its image can be kept


REVIEW_STATES = ("new", "accepted", "rejected")


class ExamWorkflow:
    """Exams and exposures of one room. One exposure at a time (the sequence serialises them)."""

    def __init__(self, config: Config, hardware: Hardware, pipeline: ImagePipeline, *, alarms: Alarms,
                 events: EventBus | None = None, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 corrector: Callable[[], Corrector], on_saved: Callable[[SpooledInstance], None] = lambda i: None,
                 mpps: MppsQueue | None = None) -> None:
        self._config = config
        self._hw = hardware
        self._pipeline = pipeline
        self._alarms = alarms
        self._events = events or EventBus()
        self._clock = clock
        self._corrector = corrector
        self._on_saved = on_saved
        self._mpps = mpps
        self._kos_made: set[str] = set()  # images a rejection note was made for (one note per image)
        self.review_log = ReviewLog(config.path(config.spool.database).parent / "reviews.db")  # reject analysis
        if config.review.hold_s > 0:  # clinical images wait for the technologist's verdict
            pipeline.spool.hold_for_review(  # destinations as now configured (SIGHUP reloads them)
                config.review.hold_s, frozenset({DX_FOR_PRESENTATION, DX_FOR_PROCESSING}),
                unheld=lambda: {d.name for d in pipeline.config.destinations if not d.review_hold})
        pipeline.spool.keep_rejected_s = config.review.keep_rejected_days * 86400.0  # then retention deletes them
        self._lock = threading.Lock()
        # Frames read after a dose whose raw record could not be written: held here, retried
        # before the next exposure, which is refused while any is left.
        self._unkept: list[tuple[RawFrame, Exposure, dict[str, Any]]] = []
        # The raw frame goes to disk on its own thread while its image is made (hashing, writing
        # and fsyncing 19 MB would otherwise stand between the readout and the archive).
        self._keeper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dxgate-keep")
        self._calibration_warned: set[str] = set()  # calibration warnings logged (once each, not per re-check)
        # Exams closed lately (the state database: a restart keeps them), to reopen (append case).
        self._closed = ClosedExams(config.path(config.spool.database), busy_timeout_s=config.spool.db_busy_timeout_s)

        self.current: Exam | None = None
        self.view: ViewChoice | None = None
        self.armed = False
        self.reviewed: list[ReviewedImage] = []
        # The hand switch's release lasts while armed; disarming (or a new view, or closing the
        # exam) sets this event, which withdraws a release still waiting for the hand switch.
        self._armed_changed = threading.Condition(self._lock)
        self._withdrawn = threading.Event()
        self._withdrawn.set()
        self._software = 0  # software triggers waiting or under way: the hand switch waits for them

    @property
    def frames_held_in_memory(self) -> int:
        return len(self._unkept)

    # --- the console's exam ------------------------------------------------------------------

    def start(self, item: WorklistItem | None, operator: str = "") -> Exam:
        """Open the exam the console works on (one at a time: close the open one first)."""
        with self._lock:
            if self.current is not None:
                raise DxgateError("an exam is already open: close it first")
            self.current = self.open_exam(item, operator)
            self.view, self.reviewed = None, []
            self._set_armed(False)
        grouped = {"orders": 1 + len(item.grouped)} if item is not None and item.grouped else {}
        self._events.publish("exam", state="open", study_uid=self.current.study_uid, **grouped)
        return self.current

    def start_group(self, items: list[WorklistItem], operator: str = "") -> Exam:
        """The group case (PS3.17 Annex J, IHE SWF): several requested procedures of one patient
        acquired in one exam. The images go into the first order's study, name every requested
        procedure (Request Attributes Sequence) and one procedure step reports them all."""
        if len(items) < 2:
            raise DxgateError("a group needs at least two requested procedures")
        first = items[0]
        if any((i.patient_id, i.issuer_of_patient_id) != (first.patient_id, first.issuer_of_patient_id)
               for i in items[1:]):
            raise DxgateError("grouped procedures must be of one patient (the same Patient ID and issuer)")
        if len({(i.accession_number, i.requested_procedure_id, i.sps_id) for i in items}) != len(items):
            raise DxgateError("a requested procedure is in the group twice")
        return self.start(dataclasses.replace(first, grouped=tuple(dataclasses.replace(i, grouped=())
                                                                   for i in items[1:])), operator)

    def closed_exams(self) -> list[ClosedExam]:
        """The exams closed lately (within the state database's window, restarts included), oldest first."""
        return self._closed.recent(self._clock().timestamp())

    def reopen(self, study_uid: str, operator: str = "") -> Exam:
        """The append case (IHE SWF): open again an exam closed lately, to add views to its
        study: the same Study Instance UID and order, a new series (the next series number,
        reserved at once), a new procedure step (its own MPPS) and, for its exposures, a new
        dose report. Every console is told (an "exam" event with `reopened`)."""
        with self._lock:
            if self.current is not None:
                raise DxgateError("an exam is already open: close it first")
            try:
                before = self._closed.get(study_uid, self._clock().timestamp())
            except sqlite3.Error as exc:
                raise DxgateError(f"the closed exams cannot be read: {exc}") from None
            if before is None:
                raise DxgateError("no exam of that study was closed here lately: start it from the worklist")
            exam = self.open_exam(before.item, operator, study_uid=study_uid, series_number=before.series_number + 1)
            exam.reopened = True
            try:
                self._closed.reserve(study_uid, exam.series_number)
            except sqlite3.Error as exc:
                raise DxgateError(f"the exam cannot be reopened: its series number cannot be kept: {exc}") from None
            self.current = exam
            self.view, self.reviewed = None, []
            self._set_armed(False)
        self._events.publish("exam", state="open", study_uid=study_uid, reopened=True,
                             series_number=exam.series_number)
        return exam

    def choose_view(self, anatomy: Anatomy, technique: Technique, target_ei: float, protocol: str = ""
                    ) -> ViewChoice:
        """Select body part, view, laterality and technique for the next exposures; checked now,
        so a view that cannot be coded is refused at the console, long before the hand switch."""
        check_anatomy(anatomy.body_part, anatomy.view_position, anatomy.laterality)
        _check_technique(technique, target_ei)
        with self._lock:
            if self.current is None:
                raise DxgateError("no exam is open")
            self.view = ViewChoice(anatomy, technique, float(target_ei), protocol)
            self._set_armed(False)
        self._events.publish("exam", state="view", body_part=anatomy.body_part, view=anatomy.view_position)
        return self.view

    def protocols(self) -> list[ProtocolConfig]:
        """Every protocol of the room, those the open exam's worklist codes ask for first."""
        suggested = self.suggested_protocols()
        return suggested + [p for p in self._config.protocols if p not in suggested]

    def suggested_protocols(self) -> list[ProtocolConfig]:
        """The protocols whose codes the open exam's order carries (Scheduled Protocol Code or
        Requested Procedure Code, compared as SCHEME:VALUE); none for an unscheduled exam."""
        cur = self.current
        if cur is None or cur.item is None:
            return []
        keys = {f"{c.scheme}:{c.value}" for order in (cur.item, *cur.item.grouped)
                for c in (*order.protocol_codes, *order.procedure_codes)}
        return [p for p in self._config.protocols if keys.intersection(p.codes)]

    def choose_protocol(self, name: str, *, laterality: str | None = None, kvp: float | None = None,
                        mas: float | None = None) -> ViewChoice:
        """Select a protocol of the table for the next exposures; a paired body part needs the
        laterality (the protocol's own, or the one given here); technique may be adjusted."""
        found = [p for p in self._config.protocols if p.name == name]
        if not found:
            raise DxgateError(f"no protocol named {name!r} in this room's table")
        p = found[0]
        return self.choose_view(Anatomy(p.body_part, p.view_position, laterality or p.laterality or None),
                                Technique(kvp=p.kvp if kvp is None else kvp, mas=p.mas if mas is None else mas),
                                p.target_ei, p.name)

    def arm(self, armed: bool = True) -> None:
        """Ready (or not) for the hand switch: needs an open exam and a chosen view."""
        with self._lock:
            if armed and (self.current is None or self.view is None):
                raise DxgateError("choose an exam and a view before arming")
            self._set_armed(armed)
        self._events.publish("exam", state="armed" if armed else "disarmed")

    def _set_armed(self, armed: bool) -> None:
        """With the lock held: arm (a fresh release) or disarm (withdraw a waiting release)."""
        if armed and not self.armed:
            self._withdrawn = threading.Event()
        elif not armed:
            self._withdrawn.set()
        self.armed = armed
        self._armed_changed.notify_all()

    def wait_armed(self, timeout_s: float) -> threading.Event | None:
        """Wait until armed; returns the event that withdraws this arming (None: not armed in time)."""
        with self._armed_changed:
            if not self._armed_changed.wait_for(lambda: self.armed and not self._software, timeout_s):
                return None
            return self._withdrawn

    def expose_chosen(self, hand_switch: threading.Event | None = None) -> AcquiredImage | None:
        """One exposure of the open exam with the chosen view.

        With `hand_switch` (a cancel event), the exposure is released to the technologist's hand
        switch and waited for; None when the release is withdrawn (cancel set) before it fired.
        Without it, a software trigger (service and QA).
        """
        with self._lock:
            exam, view = self.current, self.view
            if exam is None or view is None or not self.armed:
                raise ExposureRefused("exposure refused before the tube fired: not armed (choose an exam and a "
                                      "view, then arm)")
        if hand_switch is None:
            return self._software_trigger(exam, view)
        image = self._acquire(exam, view.technique, anatomy=view.anatomy, target_ei=view.target_ei,
                              hand_switch=hand_switch)
        if image is not None:
            self._keep_for_review(image, view)
        return image

    def _software_trigger(self, exam: Exam, view: ViewChoice) -> AcquiredImage | None:
        """Service and QA: withdraw a release waiting for the hand switch, expose, then let the
        hand switch have the room again."""
        with self._armed_changed:
            self._software += 1
            self._withdrawn.set()
        try:
            image = self._acquire(exam, view.technique, anatomy=view.anatomy, target_ei=view.target_ei)
            if image is not None:
                self._keep_for_review(image, view)
            return image
        finally:
            with self._armed_changed:
                self._software -= 1
                if self.armed and self._withdrawn.is_set():
                    self._withdrawn = threading.Event()
                self._armed_changed.notify_all()

    def _keep_for_review(self, image: AcquiredImage, view: ViewChoice) -> None:
        try:
            png: bytes | None = preview_png(image.frame.pixels if image.display is None else image.display)
        except DxgateError as exc:  # the image is saved; only its preview is missing
            LOGGER.error("no preview for %s: %s", image.instance.sop_instance_uid, exc)
            png = None
        with self._lock:
            self.reviewed.append(ReviewedImage(instance=image.instance, exposure=image.exposure,
                                               exposure_index=image.exposure_index, view=view, preview=png,
                                               processing_uid=image.processing_uid))
            for older in self.reviewed[:-PREVIEWS_KEPT]:
                older.preview = None

    def review(self, sop_instance_uid: str, status: str, reason: str = "") -> ReviewedImage:
        """Accept or reject an image of the open exam (a rejection needs a reason; it stays kept)."""
        if status not in ("accepted", "rejected"):
            raise DxgateError(f"review status must be accepted or rejected, not {status!r}")
        if status == "rejected" and not reason.strip():
            raise DxgateError("a rejected image needs a reason")
        with self._lock:
            for r in self.reviewed:
                if r.instance.sop_instance_uid == sop_instance_uid:
                    r.status, r.reason = status, reason.strip()
                    break
            else:
                raise DxgateError(f"no image {sop_instance_uid} in the open exam")
            operator = self.current.operator if self.current else ""
        self._apply_verdict(r, operator)
        self._events.publish("image", sop_instance_uid=sop_instance_uid, state=status)
        return r

    def _apply_verdict(self, r: ReviewedImage, operator: str, *, reviewed: bool = True) -> None:
        """Record the verdict for reject analysis, then release (accepted) or withhold (rejected)
        the image's deliveries; a failure is alarmed, the verdict stands."""
        sop_instance_uid, status = r.instance.sop_instance_uid, "accepted" if r.status == "new" else r.status
        try:
            self.review_log.record(record_of(
                sop_instance_uid, r.exposure, r.exposure_index, r.view.anatomy, protocol=r.view.protocol,
                technologist=operator, status=status, reviewed=reviewed, reason=r.reason,
                judged_at=self._clock().timestamp()))
        except Exception as exc:  # statistics only: the verdict itself stands
            LOGGER.error("verdict on %s not recorded for reject analysis: %s: %s", sop_instance_uid,
                         type(exc).__name__, exc)
        try:
            config = self._pipeline.config  # its destinations as reloaded: each one's send_rejection_kos
            apply_verdict(self._pipeline.spool, config, sop_instance_uid, status, self._clock(), self._kos_made)
            if r.processing_uid:  # not clinical itself, but a rejected exposure's raw image is no research data
                apply_verdict(self._pipeline.spool, config, r.processing_uid, status, self._clock(), self._kos_made)
        except Exception as exc:
            LOGGER.error("verdict %s on %s not applied to its deliveries: %s: %s", status, sop_instance_uid,
                         type(exc).__name__, exc)
            self._alarms.raise_("verdict-not-applied", f"an image was {status}, but its deliveries could not be "
                               f"changed: {type(exc).__name__}: {exc}", key=sop_instance_uid)

    def finish(self, *, completed: bool = True, reason: str = "") -> Exam:
        """Close the open exam (completed, or discontinued with a reason)."""
        with self._lock:
            exam = self.current
            if exam is None:
                raise DxgateError("no exam is open")
            if not completed and not reason.strip():
                raise DxgateError("a discontinued exam needs a reason")
            self.current, self.view = None, None
            self._set_armed(False)
            rejected = {r.instance.sop_instance_uid: r.reason for r in self.reviewed if r.status == "rejected"}
            unreviewed = [r for r in self.reviewed if r.status == "new"]
        for image in unreviewed:  # closing the exam accepts what was not judged: held images go now
            self._apply_verdict(image, exam.operator, reviewed=False)
        dose_report = bool(exam.irradiations) and self._config.dose_report.enabled and self._report_dose(exam, rejected)
        self._report_step_ended(exam, set(rejected), completed=completed, reason=reason.strip(),
                                dose_report=dose_report)
        try:  # to reopen it (append case), after a restart too; bookkeeping: never stops the close
            self._closed.closed(exam.study_uid, exam.item, exam.series_number, self._clock().timestamp())
        except sqlite3.Error as exc:
            LOGGER.error("a closed exam could not be recorded for reopening: %s: %s", type(exc).__name__, exc)
        self._events.publish("exam", state="completed" if completed else "discontinued",
                             study_uid=exam.study_uid, images=len(exam.images))
        return exam

    def _report_dose(self, exam: Exam, rejected: dict[str, str]) -> bool:
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

    # --- MPPS: the step is reported at its first image and when the exam is closed ---------------

    def _step(self, exam: Exam) -> Performed:
        site = self._config.site
        assert exam.pps_start is not None
        return Performed(item=exam.item, study_uid=exam.study_uid, pps_id=exam.pps_id, start=exam.pps_start,
                         station_ae=site.ae_title, station_name=site.station_name, operator=exam.operator)

    def _report_step_started(self, exam: Exam) -> None:
        if self._mpps is None or exam.mpps_created or not exam.mpps_uid:
            return
        self._mpps.add(exam.mpps_uid, "create", in_progress(self._step(exam)), time.time())
        exam.mpps_created = True

    def _report_step_ended(self, exam: Exam, rejected: set[str], *, completed: bool, reason: str,
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

    def open_exam(self, item: WorklistItem | None, operator: str = "", *, study_uid: str = "",
                  series_number: int = 1) -> Exam:
        """Start an exam; the Study Instance UID comes from the worklist whenever it gives one
        (`study_uid`: an earlier exam's, when one is reopened to append to its study)."""
        if item is not None and (problem := text_problem(item)):
            raise DxgateError(f"this patient or order cannot be written into an image: {problem}")
        try:
            check_text(operator)
        except UndecodableText as exc:
            raise DxgateError(f"the operator's name cannot be written into an image: {exc}") from None
        root = self._config.site.uid_root
        study_uid = study_uid or (item.study_instance_uid if item and item.study_instance_uid else new_uid(root))
        opened = self._clock()
        # SH, 16 characters: unique per room (one exam at a time), readable as its opening time.
        pps_id = "P" + opened.astimezone(UTC).strftime("%y%m%d%H%M%S%f")[:14]
        return Exam(item=item, study_uid=study_uid, series_uid=new_uid(root), series_number=series_number,
                    operator=operator[:64], pps_id=pps_id,
                    mpps_uid=new_uid(root) if self._mpps is not None else "", dose_series_uid=new_uid(root),
                    dose_report_uid=new_uid(root))

    def preflight(self, technique: Technique, body_part: str, view_position: str,
                  laterality: str | None, target_ei: float = 400.0, item: WorklistItem | None = None) -> Corrector:
        """Everything that could refuse the image, checked before the tube may fire.

        Raises ExposureRefused naming the cause (no X-rays are given); returns the corrector.
        """
        try:
            if self._unkept and not self.retry_unkept():
                raise DxgateError(f"{len(self._unkept)} frame(s) from earlier exposures are held in memory "
                                  "because their raw record could not be written: free the state disk first")
            _check_technique(technique, target_ei)
            if item is not None and (problem := text_problem(item)):
                raise DxgateError(f"the exam's patient or order data cannot be written into the image: {problem}")
            corrector = self._corrector()
            check_validity(corrector.cal, self._config.calibration, now=self._clock(),  # age and drift: warn or block
                           temperature_c=self._hw.detector.status().temperature_c, logged=self._calibration_warned)
            check_anatomy(body_part, view_position, laterality)
            self._pipeline.check_routable(body_part)
            self._pipeline.check_storage(self._hw.mode.rows, self._hw.mode.columns)
        except DxgateError as exc:
            LOGGER.error("exposure refused before the tube fired: %s", exc)
            raise ExposureRefused(f"exposure refused before the tube fired: {exc}") from exc
        return corrector

    def expose(self, exam: Exam, technique: Technique | None = None, *, laterality: str | None = None,
               anatomy: Anatomy | None = None, target_ei: float | None = None) -> AcquiredImage:
        """Expose, keep the raw frame, correct, build the DX image and spool it; returns once saved.

        Everything that could refuse the image is checked before the tube fires (ExposureRefused:
        no dose). From the EXPOSE command on, the frame is kept whatever fails: a failure after
        the dose raises FrameKeptError naming the kept frame, which `reprocess` turns into its
        image once the cause is fixed.
        """
        image = self._acquire(exam, technique, laterality=laterality, anatomy=anatomy, target_ei=target_ei)
        assert image is not None  # the software trigger always exposes (or raises)
        return image

    def _acquire(self, exam: Exam, technique: Technique | None = None, *, laterality: str | None = None,
                 anatomy: Anatomy | None = None, target_ei: float | None = None,
                 hand_switch: threading.Event | None = None) -> AcquiredImage | None:
        exp_cfg = self._config.exposure
        if anatomy is None:
            anatomy = Anatomy(exp_cfg.body_part, exp_cfg.view_position, laterality or exp_cfg.laterality or None)
        laterality = anatomy.laterality or None
        technique = technique or Technique(kvp=exp_cfg.kvp, mas=exp_cfg.mas)
        target_ei = exp_cfg.target_ei if target_ei is None else target_ei
        corrector = self.preflight(technique, anatomy.body_part, anatomy.view_position, laterality, target_ei,
                                   exam.item)
        root = self._config.site.uid_root
        if exam.pps_start is None:
            exam.pps_start = self._clock()
        ctx = ImageContext(item=exam.item, study_uid=exam.study_uid, series_uid=exam.series_uid,
                           operator=exam.operator, pps_id=exam.pps_id, pps_start=exam.pps_start,
                           mpps_uid=exam.mpps_uid,
                           processing_uid=new_uid(root) if self._pipeline.objects_per_exposure() > 1 else "",
                           series_number=exam.series_number, sop_instance_uid=new_uid(root),
                           instance_number=len(exam.images) + 1, body_part=anatomy.body_part,
                           view_position=anatomy.view_position, laterality=laterality,
                           target_ei=target_ei,
                           detector=self._hw.detector.info, pixel_spacing_mm=self._hw.mode.pixel_spacing_mm)
        t0 = time.perf_counter()
        if hand_switch is None:
            raw, exposure = self._hw.sequence.expose(technique)  # from here on, X-rays may have been given
        else:
            acquired = self._hw.sequence.expose_on_hand_switch(
                technique, hand_switch, check=lambda: self.preflight(technique, anatomy.body_part,
                                                                      anatomy.view_position, laterality, target_ei,
                                                                      exam.item), recheck_s=RECHECK_S)
            if acquired is None:
                return None  # the release was withdrawn before the hand switch fired: no X-rays
            raw, exposure = acquired
        laps = {"acquire": time.perf_counter() - t0}
        LOGGER.info("read frame %d", raw.meta.frame_number)  # the end of readout: where latency counts from
        # First: nothing may stand between the dose and keeping its frame. It is written while
        # the image is made, and waited for on every way out of here.
        keeping = self._start_keep(raw, exposure, ctx)
        try:
            exam.detector = ctx.detector
            exam.irradiations.append(IrradiationEvent(  # X-rays were given: the dose report lists it, image or not
                event_uid=irradiation_event_uid(root, raw.meta), exposure=exposure, body_part=anatomy.body_part,
                view_position=anatomy.view_position, laterality=laterality, image_uid=ctx.sop_instance_uid,
                protocol=self.view.protocol if self.view else ""))
            made = self._pipeline.make_image(raw, exposure, ctx, corrector, laps)
        except Exception as exc:
            kept_id, _ = keeping.result()
            reason = f"{type(exc).__name__}: {exc}"
            if kept_id:
                self._pipeline.raw_store.note_failure(kept_id, reason)
                self._alarms.raise_("image-not-made", f"frame {raw.meta.frame_number} is kept as {kept_id}, but "
                                   f"its image could not be made: {reason}; fix the cause, then run "
                                   "`dxgate reprocess`", key=kept_id)
                raise FrameKeptError(f"X-rays were given and frame {raw.meta.frame_number} is kept as {kept_id}, "
                                     f"but its image could not be made: {reason}", kept_id) from exc
            raise FrameKeptError(f"X-rays were given and frame {raw.meta.frame_number} is held in memory only "
                                 f"(its raw record could not be written), and its image could not be made: "
                                 f"{reason}") from exc
        except BaseException:
            keeping.result()
            raise
        kept_id, laps["keep"] = keeping.result()
        if kept_id:
            self._pipeline.image_made(kept_id)
        else:  # the image is saved: the frame held in memory is no longer needed
            self._unkept = [u for u in self._unkept if u[0] is not raw]
            self._alarms.clear("frame-not-kept", f"frame {raw.meta.frame_number}")
        exam.images.append(made.instance)
        view_now = self.view
        exam.performed.append(PerformedImage(series_uid=exam.series_uid, sop_class_uid=made.instance.sop_class_uid,
                                             sop_instance_uid=made.instance.sop_instance_uid,
                                             protocol_name=view_now.protocol if view_now else ""))
        self._report_step_started(exam)
        ei = made.exposure_index
        LOGGER.info("saved %s (frame %d, %s; ms %s)", made.instance.sop_instance_uid, raw.meta.frame_number,
                    f"EI {ei.ei:.0f}, DI {ei.deviation_index:+.1f}" if ei else "no EI",
                    " ".join(f"{k} {v * 1000:.0f}" for k, v in made.stage_seconds.items()))
        self._on_saved(made.instance)
        return AcquiredImage(instance=made.instance, exposure=exposure, exposure_index=ei, frame=made.frame,
                             stage_seconds=made.stage_seconds, kept_id=kept_id, display=made.display,
                             processing_uid=made.processing_uid)

    def _start_keep(self, raw: RawFrame, exposure: Exposure, ctx: ImageContext) -> Future[tuple[str, float]]:
        """Keep the frame on the keeper thread (here, if that thread is gone); the future never
        raises: a frame that cannot be written is held in memory (see _keep)."""
        try:
            return self._keeper.submit(self._keep_timed, raw, exposure, ctx)
        except RuntimeError:  # shut down under us: keep it on this thread
            done: Future[tuple[str, float]] = Future()
            done.set_result(self._keep_timed(raw, exposure, ctx))
            return done

    def _keep_timed(self, raw: RawFrame, exposure: Exposure, ctx: ImageContext) -> tuple[str, float]:
        t0 = time.perf_counter()
        try:
            context = ctx.to_json()
        except Exception as exc:  # the frame is kept all the same; reprocess then needs an engineer
            context = {"context_unavailable": f"{type(exc).__name__}: {exc}"}
        return self._keep(raw, exposure, context), time.perf_counter() - t0

    def _keep(self, raw: RawFrame, exposure: Exposure, context: dict[str, Any]) -> str:
        """Write the raw frame durably; on failure hold it in memory and raise an alarm."""
        try:
            return self._pipeline.raw_store.keep(raw, exposure, context, now=self._clock())
        except Exception as exc:  # RawStoreError or anything unforeseen: the frame must not be dropped
            self._unkept.append((raw, exposure, context))
            self._alarms.raise_("frame-not-kept", f"frame {raw.meta.frame_number} was read after a dose but could "
                               f"not be written to disk ({exc}); it is held in memory, and exposures are refused "
                               "until it is written", key=f"frame {raw.meta.frame_number}")
            return ""

    def keep_recovered(self, frames: list[RawFrame]) -> list[str]:
        """Keep frames the panel held when it was opened (X-rays given, the host gone before
        their image was saved): raw records with the dose unknown and no exam, and an alarm each."""
        kept = []
        for raw in frames:
            exposure = Exposure(requested=Technique(kvp=0.0, mas=0.0), actual=None, started_at=raw.meta.acquired_at,
                                problems=("dose unknown: frame found on the panel at start-up",))
            kept_id = self._keep(raw, exposure, {"recovered_at_startup": True})
            if kept_id:
                self._alarms.raise_("frame-recovered", f"frame {raw.meta.frame_number} was found on the panel at "
                                   f"start-up (X-rays were given, no image was saved) and is kept as {kept_id}; "
                                   "its exam is unknown: an engineer must assign it", key=kept_id)
                kept.append(kept_id)
        return kept

    def retry_unkept(self) -> bool:
        """Write frames held in memory to the raw store; True when none is left."""
        still = []
        for raw, exposure, context in self._unkept:
            try:
                kept_id = self._pipeline.raw_store.keep(raw, exposure, context, now=self._clock())
            except RawStoreError as exc:
                LOGGER.error("frame %d still not written: %s", raw.meta.frame_number, exc)
                still.append((raw, exposure, context))
                continue
            self._alarms.clear("frame-not-kept", f"frame {raw.meta.frame_number}")
            self._alarms.raise_("image-not-made", f"frame {raw.meta.frame_number} is now kept as {kept_id}; run "
                               "`dxgate reprocess` to make its image", key=kept_id)
        self._unkept = still
        return not still

    def close(self) -> None:
        self._keeper.shutdown(wait=True)  # a frame being written is finished first
        if self._unkept:
            LOGGER.error("%d frame(s) held in memory are lost at shutdown: their raw record could never be "
                         "written", len(self._unkept))
        self.review_log.close()
        self._closed.close()


def _check_technique(technique: Technique, target_ei: float) -> None:
    if not (isinstance(target_ei, (int, float)) and math.isfinite(target_ei) and target_ei > 0):
        raise ConfigError(f"target exposure index {target_ei!r} must be a positive number")
    for name, value, (lo, hi) in (("kV", technique.kvp, KVP_RANGE), ("mAs", technique.mas, MAS_RANGE)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
            raise ConfigError(f"technique {name} {value!r} is outside [{lo:g}, {hi:g}]")
