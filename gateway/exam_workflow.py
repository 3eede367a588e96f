"""The technologist's room: exams, the view chosen for each exposure, arming, and the coordinator over the parts."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.alarms import Alarms
from gateway.closed_exams import ClosedExam, ClosedExams
from gateway.config import Config, ProtocolConfig
from gateway.correction import Corrector
from gateway.dicom import check_anatomy
from gateway.errors import DxgateError, ExposureRefused
from gateway.events import EventBus
from gateway.exam_exposure import Exposures
from gateway.exam_opening import grouped_item, new_exam
from gateway.exam_reports import ExamReports
from gateway.exam_review import Verdicts, add_for_review, check_verdict, mark, preview_of
from gateway.exam_types import (
    DOSE_REPORT_PROTOCOL,
    KVP_RANGE,
    MAS_RANGE,
    PREVIEWS_KEPT,
    RECHECK_S,
    REVIEW_STATES,
    AcquiredImage,
    Exam,
    ReviewedImage,
    ViewChoice,
    check_technique,
)
from gateway.frame_keeper import FrameKeeper
from gateway.hardware import Hardware
from gateway.imaging import ImagePipeline
from gateway.mpps import MppsQueue
from gateway.types import Anatomy, RawFrame, SpooledInstance, Technique, WorklistItem

__all__ = [
    "DOSE_REPORT_PROTOCOL", "KVP_RANGE", "MAS_RANGE", "PREVIEWS_KEPT", "RECHECK_S", "REVIEW_STATES",
    "AcquiredImage", "Exam", "ExamWorkflow", "ReviewedImage", "ViewChoice",
]

LOGGER = logging.getLogger(__name__)


class ExamWorkflow:
    """Exams and exposures of one room. One exposure at a time (the sequence serialises them).

    The parts: `Exposures` (checks before the tube fires, the exposure, its image), `FrameKeeper`
    (every dose's raw frame kept, whatever fails), `Verdicts` (the review) and `ExamReports`
    (MPPS and the dose report). This class holds the open exam, its view and the arming.
    """

    def __init__(self, config: Config, hardware: Hardware, pipeline: ImagePipeline, *, alarms: Alarms,
                 events: EventBus | None = None, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 corrector: Callable[[], Corrector], on_saved: Callable[[SpooledInstance], None] = lambda i: None,
                 mpps: MppsQueue | None = None) -> None:
        self._config = config
        self._events = events or EventBus()
        self._clock = clock
        self._mpps = mpps
        self._verdicts = Verdicts(config, pipeline, alarms=alarms, clock=clock)
        self.review_log = self._verdicts.log  # reject analysis
        self._lock = threading.Lock()
        self._frames = FrameKeeper(pipeline, alarms=alarms, clock=clock)
        self._reports = ExamReports(config, pipeline, alarms=alarms, clock=clock, mpps=mpps)
        self._exposures = Exposures(config, hardware, pipeline, self._frames, alarms=alarms, clock=clock,
                                    corrector=corrector, view=lambda: self.view, on_step=self._reports.step_started,
                                    on_saved=on_saved)
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
        return len(self._frames.unkept)

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
        return self.start(grouped_item(items), operator)

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
        check_technique(technique, target_ei)
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
        png = preview_of(image)
        with self._lock:
            add_for_review(self.reviewed, image, view, png, previews_kept=PREVIEWS_KEPT)  # read now, as RECHECK_S

    def review(self, sop_instance_uid: str, status: str, reason: str = "") -> ReviewedImage:
        """Accept or reject an image of the open exam (a rejection needs a reason; it stays kept)."""
        check_verdict(status, reason)
        with self._lock:
            r = mark(self.reviewed, sop_instance_uid, status, reason)
            operator = self.current.operator if self.current else ""
        self._verdicts.apply(r, operator)
        self._events.publish("image", sop_instance_uid=sop_instance_uid, state=status)
        return r

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
            self._verdicts.apply(image, exam.operator, reviewed=False)
        dose_report = (bool(exam.irradiations) and self._config.dose_report.enabled
                       and self._reports.dose(exam, rejected))
        self._reports.step_ended(exam, set(rejected), completed=completed, reason=reason.strip(),
                                 dose_report=dose_report)
        try:  # to reopen it (append case), after a restart too; bookkeeping: never stops the close
            self._closed.closed(exam.study_uid, exam.item, exam.series_number, self._clock().timestamp())
        except sqlite3.Error as exc:
            LOGGER.error("a closed exam could not be recorded for reopening: %s: %s", type(exc).__name__, exc)
        self._events.publish("exam", state="completed" if completed else "discontinued",
                             study_uid=exam.study_uid, images=len(exam.images))
        return exam

    def open_exam(self, item: WorklistItem | None, operator: str = "", *, study_uid: str = "",
                  series_number: int = 1) -> Exam:
        """Start an exam; the Study Instance UID comes from the worklist whenever it gives one
        (`study_uid`: an earlier exam's, when one is reopened to append to its study)."""
        return new_exam(item, operator, uid_root=self._config.site.uid_root, clock=self._clock,
                        mpps=self._mpps is not None, study_uid=study_uid, series_number=series_number)

    # --- exposures: checked before the tube fires, the frame kept after (see Exposures) ----------

    def preflight(self, technique: Technique, body_part: str, view_position: str,
                  laterality: str | None, target_ei: float = 400.0, item: WorklistItem | None = None) -> Corrector:
        """Everything that could refuse the image, checked before the tube may fire.

        Raises ExposureRefused naming the cause (no X-rays are given); returns the corrector.
        """
        return self._exposures.preflight(technique, body_part, view_position, laterality, target_ei, item)

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
        return self._exposures.acquire(exam, technique, laterality=laterality, anatomy=anatomy, target_ei=target_ei,
                                       hand_switch=hand_switch, recheck_s=RECHECK_S)  # read now: tests shorten it

    def keep_recovered(self, frames: list[RawFrame]) -> list[str]:
        """Keep frames the panel held when it was opened (see FrameKeeper.keep_recovered)."""
        return self._frames.keep_recovered(frames)

    def retry_unkept(self) -> bool:
        """Write frames held in memory to the raw store; True when none is left."""
        return self._frames.retry_unkept()

    def close(self) -> None:
        self._frames.close()  # a frame being written is finished first
        self._verdicts.close()
        self._closed.close()
