"""The composition root: the one module that knows every room and wires them together.

Hardware comes from the driver registry (or is injected: a pyusb backend for the simulator);
the technologist's exam workflow, the engineer's calibration workflow and the worklist
service act over the image pipeline (raw store, correction, DICOM, spool); the forwarder
drains the spool on its own thread. `Gateway` holds them and delegates; it decides nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from gateway.acquisition import ExposureState
from gateway.alarms import Alarm, Alarms
from gateway.audit import AuditTrail
from gateway.calibration_workflow import CalibrationWorkflow, Progress
from gateway.config import Config
from gateway.correction import CalibrationSet, Corrector
from gateway.dicom import check_anatomy
from gateway.errors import ConfigError, DxgateError
from gateway.events import EventBus
from gateway.exam_workflow import AcquiredImage, Exam, ExamWorkflow
from gateway.forward import CommitmentListener, DeliveryResult, Forwarder, settings_from
from gateway.hardware import Hardware, open_hardware
from gateway.imaging import ImagePipeline, ReprocessResult, state_directories
from gateway.mpps import MppsQueue, MppsRecord, MppsSender
from gateway.netopts import configure_pynetdicom
from gateway.types import Anatomy, CalibrationKey, SpooledInstance, Technique, WorklistItem
from gateway.worklist_service import WorklistService, WorklistView

LOGGER = logging.getLogger(__name__)

__all__ = ["AcquiredImage", "Exam", "Gateway", "WorklistView", "make_state_directories"]


def make_state_directories(config: Config) -> None:
    """Create the state directories owner-only when they are new (they hold patient data); an
    existing directory keeps its permissions (a --home of /tmp must not become 0700)."""
    for d in [Path(config.state_dir), *state_directories(config)]:
        if not d.exists():
            d.mkdir(mode=0o700, parents=True)


class Gateway:
    """A running gateway for one detector: its rooms, wired."""

    def __init__(self, config: Config, *, usb_backend: Any | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), events: EventBus | None = None) -> None:
        if not config.destinations:
            raise ConfigError("no destination configured: images would have nowhere to go")
        configure_pynetdicom()
        self.config = config
        self._clock = clock
        exp = config.exposure
        check_anatomy(exp.body_part, exp.view_position, exp.laterality or None)  # at start, not at exposure
        make_state_directories(config)
        self.events = events or EventBus()
        self.alarms = Alarms(clock=self._epoch)
        self.alarms.subscribe(self._publish_alarm)
        self.pipeline = ImagePipeline(config, alarms=self.alarms, clock=clock, spool_clock=self._epoch)
        self.spool = self.pipeline.spool
        self.calibrations = self.pipeline.calibrations
        self.raw_store = self.pipeline.raw_store
        try:
            self.hardware: Hardware = open_hardware(config, alarms=self.alarms, usb_backend=usb_backend, clock=clock)
        except BaseException:
            self.pipeline.close()
            raise
        # Security events of the DICOM side (a failed TLS handshake, a refused association) are
        # recorded in the state database; the daemon's audit trail ships every record to syslog.
        self._audit = AuditTrail(
            config.path(config.spool.database), source_id=config.site.ae_title, site=config.site.institution_name,
            busy_timeout_s=config.spool.db_busy_timeout_s)
        try:
            self.forwarder = Forwarder(self.spool, config.destinations, calling_ae=config.site.ae_title,
                                       clock=self._epoch, alarms=self.alarms, audit=self._audit.record)
        except BaseException:
            self._audit.close()
            self.hardware.close()
            self.pipeline.close()
            raise
        self.detector, self.generator = self.hardware.detector, self.hardware.generator
        self.mode, self.sequence = self.hardware.mode, self.hardware.sequence
        self.sequence.subscribe(self._publish_state)
        self.mpps: MppsQueue | None = None
        self.mpps_sender: MppsSender | None = None
        if config.mpps.enabled:
            self.mpps = MppsQueue(config.path(config.spool.database), busy_timeout_s=config.spool.db_busy_timeout_s)
            self.mpps_sender = MppsSender(self.mpps, config.mpps, calling_ae=config.site.ae_title,
                                          on_refused=self._mpps_refused)
        self.exams = ExamWorkflow(config, self.hardware, self.pipeline, alarms=self.alarms, events=self.events,
                                  clock=clock, corrector=self.corrector, on_saved=self._saved, mpps=self.mpps)
        self.exams.keep_recovered(list(getattr(self.detector, "recovered", [])))
        self.calibration = CalibrationWorkflow(config, self.hardware, self.pipeline, events=self.events, clock=clock,
                                               audit=self._audit.record)
        self.worklists = WorklistService(config, clock=clock)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._forward_thread: threading.Thread | None = None
        self.commit_listener: CommitmentListener | None = None
        self._commitment_listener(config)
        pending = self.raw_store.pending()
        if pending:
            self.alarms.raise_("frames-awaiting-reprocess",
                               f"{len(pending)} kept raw frame(s) have no image yet: fix the cause named by "
                               "`dxgate reprocess --list`, then run `dxgate reprocess`")

    def now(self) -> datetime:
        return self._clock()

    def wake_forwarder(self) -> None:
        """Forward now (after an operator retry or release), not at the next due time."""
        self._wake.set()

    def _epoch(self) -> float:
        """The gateway clock as seconds: one clock for the spool and the forwarder."""
        return self._clock().timestamp()

    def _publish_alarm(self, alarm: Alarm) -> None:
        self.events.publish("alarm", code=alarm.code, key=alarm.key, message=alarm.message,
                            severity=alarm.severity.value)

    def _publish_state(self, state: ExposureState, detail: str) -> None:
        self.events.publish("exposure", state=state.value, detail=detail)

    def _saved(self, instance: SpooledInstance) -> None:
        self.events.publish("image", sop_instance_uid=instance.sop_instance_uid, state="saved")
        self._wake.set()

    @property
    def calibration_key(self) -> CalibrationKey:
        return self.hardware.calibration_key

    # --- field engineer -------------------------------------------------------------------

    def calibrate(self, operator: str = "", progress: Progress | None = None) -> CalibrationSet:
        return self.calibration.calibrate(operator, progress)

    def has_calibration(self) -> bool:
        return self.calibrations.latest_id(self.calibration_key) is not None

    def corrector(self) -> Corrector:
        """The corrector of the newest valid calibration set, checked again at every exposure:
        a set that aged past its limit while the daemon ran is refused, a newer one is used,
        and one of another shape than the armed mode is refused."""
        return self.pipeline.corrector(self.calibration_key, (self.mode.rows, self.mode.columns),
                                       max_age_days=self.config.calibration.max_age_days)

    def reprocess(self, kept_ids: list[str] | None = None) -> list[ReprocessResult]:
        """Make the images of kept raw frames (see ImagePipeline.reprocess)."""
        results = self.pipeline.reprocess(kept_ids)
        if any(r.outcome != "failed" for r in results):
            self._wake.set()
        return results

    # --- technologist ---------------------------------------------------------------------

    def worklist(self, on: date | None = None, *, patient_id: str = "", accession_number: str = "") -> WorklistView:
        return self.worklists.worklist(on, patient_id=patient_id, accession_number=accession_number)

    def open_exam(self, item: WorklistItem | None) -> Exam:
        return self.exams.open_exam(item)

    def expose(self, exam: Exam, technique: Technique | None = None, *, laterality: str | None = None,
               anatomy: Anatomy | None = None, target_ei: float | None = None) -> AcquiredImage:
        return self.exams.expose(exam, technique, laterality=laterality, anatomy=anatomy, target_ei=target_ei)

    # --- store and forward ----------------------------------------------------------------

    def forward_due(self) -> list[DeliveryResult]:
        return self.forwarder.forward_due(self._stop)

    def forwarding_alive(self) -> bool:
        """Whether the forwarding thread runs (for the health check and the watchdog)."""
        return self._forward_thread is not None and self._forward_thread.is_alive()

    def _commitment_listener(self, config: Config) -> None:
        """Create, re-configure or stop the storage commitment listener (started with forwarding)."""
        settings = settings_from(config)
        if settings is None:
            if self.commit_listener is not None:
                self.commit_listener.stop()
                self.commit_listener = None
            return
        if self.commit_listener is not None:
            self.commit_listener.configure(settings)
            return
        self.commit_listener = CommitmentListener(settings, self.forwarder.committer.handle_report,
                                                  audit=self._audit.record, clock=self._clock)
        if self._forward_thread is not None:
            self.commit_listener.start()

    def _mpps_refused(self, rec: MppsRecord, why: str) -> None:
        self.alarms.raise_("mpps-refused", f"{why}: the RIS does not know this step's state; its later "
                           "messages wait (see the RIS's log, then tell its administrator)", key=rec.mpps_uid)

    def start_forwarding(self) -> None:
        if self.mpps_sender is not None:
            self.mpps_sender.start()
        if self.commit_listener is not None and not self.commit_listener.running:
            self.commit_listener.start()
        if self._forward_thread is None:
            self._forward_thread = threading.Thread(target=self.forwarder.run, args=(self._stop, self._wake),
                                                    name="dxgate-forward", daemon=True)
            self._forward_thread.start()

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded configuration's destinations and worklist settings (SIGHUP); the
        queue is untouched: deliveries to a destination that left stay pending for it."""
        self.forwarder.reconfigure(config.destinations)
        self._commitment_listener(self.config.model_copy(update={"destinations": config.destinations}))
        self.worklists.reconfigure(config)
        self.config = self.config.model_copy(update={"destinations": config.destinations,
                                                     "worklist": config.worklist})
        self.pipeline.config = self.config
        self._wake.set()

    # --- health and levels (status, metrics, watchdog) -----------------------------------------

    def forwarder_idle_max_s(self) -> float:
        return self.forwarder.max_idle_s

    def forwarder_progressing(self) -> bool:
        """False when the forwarding loop has been stuck in one pass for too long."""
        return self.forwarder.healthy()

    def free_bytes(self) -> dict[str, int]:
        out = {}
        for d in {self.spool.directory, self.raw_store.directory, self.spool.database.parent}:
            st = os.statvfs(d)
            out[str(d)] = st.f_bavail * st.f_frsize
        return out

    def calibration_age_s(self) -> float | None:
        latest = self.calibrations.latest_id(self.calibration_key)
        if latest is None:
            return None
        try:
            return (self._clock() - self.corrector().cal.created_at).total_seconds()
        except DxgateError:
            return None

    def alarm_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.alarms.active():
            out[a.code] = out.get(a.code, 0) + 1
        return out

    def close(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self.mpps_sender is not None:
            self.mpps_sender.stop(timeout_s=min(timeout_s, 15.0))
        if self.mpps is not None:
            self.mpps.close()
        if self.commit_listener is not None:
            self.commit_listener.stop()
        if self._forward_thread is not None:
            self._forward_thread.join(timeout=timeout_s)
        self.hardware.close()
        self.exams.close()
        if self.forwarding_alive():  # mid C-STORE past the join: closing the DB would kill it
            LOGGER.error("forwarder still busy at shutdown; spool left open for it to finish")
            return
        self.pipeline.close()
        self._audit.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
