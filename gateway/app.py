"""The composition root: the one module that knows every stage and wires them together.

Detector and generator come from the driver registry (or are injected: a pyusb backend for
the simulator); the stages run in data-flow order up to the spool, which is where an
exposure becomes "saved"; the forwarder drains the spool on its own thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from drivers import registry
from gateway.acquisition import ExposureSequence
from gateway.config import Config
from gateway.correction import CalibrationSet, CalibrationStore, Corrector, calibrate, check_age, exposure_index
from gateway.dicom import build_dx, check_anatomy, new_uid, to_bytes
from gateway.errors import CalibrationError, ConfigError, WorklistError
from gateway.forward import DeliveryResult, Forwarder
from gateway.ports import Detector, Generator
from gateway.spool import Spool
from gateway.types import (
    CalibrationKey,
    CorrectedFrame,
    Exposure,
    ExposureIndex,
    SpooledInstance,
    Technique,
    WorklistItem,
)
from gateway.worklist import load_cache_with_time, query_worklist, save_cache

LOGGER = logging.getLogger(__name__)

IMAGE_OVERHEAD_BYTES = 64 * 1024  # header and attributes of a DX object beyond its pixel data


@dataclass
class Exam:
    """One procedure at the console: its study and series identity, assigned once."""

    item: WorklistItem | None
    study_uid: str
    series_uid: str
    series_number: int = 1
    images: list[SpooledInstance] = field(default_factory=list)


@dataclass(frozen=True)
class WorklistView:
    """The scheduled steps the console shows, and whether they are live or from the offline cache."""

    items: list[WorklistItem]
    source: str  # "ris" (answered now) or "cache" (the RIS is unreachable)
    as_of: datetime | None
    error: str = ""  # why the RIS could not be asked, when source is "cache"


@dataclass(frozen=True)
class AcquiredImage:
    """An exposure that is saved: durable in the spool, queued for every destination."""

    instance: SpooledInstance
    exposure: Exposure
    exposure_index: ExposureIndex | None  # None: not computable (e.g. saturated centre); image kept
    frame: CorrectedFrame
    stage_seconds: dict[str, float]  # acquire, correct, build, spool: where an exposure's latency goes


def open_hardware(config: Config, usb_backend: Any | None = None) -> tuple[Detector, Generator]:
    """Open the detector and generator named in the configuration."""
    det = config.detector
    backend = usb_backend
    if backend is None and det.usb_backend:
        backend = registry.load_object(det.usb_backend)(**det.backend_options)
    detector = registry.open_detector(det.driver, vendor_id=det.vendor_id, product_id=det.product_id,
                                      serial=det.serial, mode=det.mode, backend=backend,
                                      read_attempts=det.read_attempts)
    try:
        gen = config.generator
        generator = registry.open_generator(gen.driver, port=gen.port, baudrate=gen.baudrate,
                                            timeout_s=gen.timeout_s)
    except BaseException:
        detector.close()
        raise
    return detector, generator


class _StageClock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = now - self._t
        self._t = now


class Gateway:
    """A running gateway: hardware, calibration, spool and forwarder for one detector."""

    def __init__(self, config: Config, *, usb_backend: Any | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if not config.destinations:
            raise ConfigError("no destination configured: images would have nowhere to go")
        self.config = config
        self._clock = clock
        exp = config.exposure
        check_anatomy(exp.body_part, exp.view_position, exp.laterality or None)  # at start, not at exposure
        # owner-only: the spool, the state database and the worklist cache hold patient data
        Path(config.state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        Path(config.state_dir).chmod(0o700)
        for d in (config.calibration.directory, config.spool.directory):
            config.path(d).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.detector, self.generator = open_hardware(config, usb_backend)
        try:
            self.mode = self.detector.info.mode(config.detector.mode)
            self.sequence = ExposureSequence(self.detector, self.generator,
                                             frame_timeout_s=config.detector.frame_timeout_s, clock=clock)
            self.calibrations = CalibrationStore(config.path(config.calibration.directory))
            self.spool = Spool(config.path(config.spool.directory), config.path(config.spool.database),
                               min_free_bytes=config.spool.min_free_mb * 1024 * 1024, clock=self._epoch)
            self.forwarder = Forwarder(self.spool, config.destinations, calling_ae=config.site.ae_title,
                                       clock=self._epoch)
        except BaseException:
            self.generator.close()  # leave no USB interface claimed, no pty open
            self.detector.close()
            raise
        self._corrector: Corrector | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._forward_thread: threading.Thread | None = None

    def _epoch(self) -> float:
        """The gateway clock as seconds: one clock for the spool and the forwarder."""
        return self._clock().timestamp()

    @property
    def calibration_key(self) -> CalibrationKey:
        return CalibrationKey(self.detector.info.serial, self.mode.name)

    # --- calibration (field engineer) ---------------------------------------------------

    def calibrate(self, operator: str = "") -> CalibrationSet:
        """Acquire dark and flat frames, compute and store a new calibration set, use it."""
        cal_cfg = self.config.calibration
        darks = [self.sequence.dark() for _ in range(cal_cfg.dark_frames)]
        technique = Technique(kvp=cal_cfg.flat_kvp, mas=cal_cfg.flat_mas)
        flats = [self.sequence.expose(technique)[0] for _ in range(cal_cfg.flat_frames)]
        cal = calibrate(darks, flats, flat_kerma_ugy=cal_cfg.flat_kerma_ugy, operator=operator,
                        technique=technique, now=self._clock())
        self.calibrations.save(cal)
        self._corrector = Corrector(cal)
        LOGGER.info("calibration %s stored and active", cal.calibration_id)
        return cal

    def has_calibration(self) -> bool:
        return self.calibrations.latest_id(self.calibration_key) is not None

    def corrector(self) -> Corrector:
        """The corrector of the newest valid calibration set, checked again at every exposure:
        a set that aged past its limit while the daemon ran is refused, a newer one is used."""
        max_age = self.config.calibration.max_age_days
        newest = self.calibrations.latest_id(self.calibration_key)
        if self._corrector is None or newest != self._corrector.cal.calibration_id:
            cal = self.calibrations.load(self.calibration_key, max_age_days=max_age, now=self._clock())
            self._corrector = Corrector(cal)
        else:
            check_age(self._corrector.cal, max_age_days=max_age, now=self._clock())
        return self._corrector

    # --- technologist -------------------------------------------------------------------

    def worklist(self, on: date | None = None, *, patient_id: str = "", accession_number: str = "") -> WorklistView:
        """Ask the RIS (for the day, or for one patient or accession); while it is unreachable,
        show its last answer for the day, filtered the same way and marked as cached."""
        wl = self.config.worklist
        cache = self.config.path(wl.cache)
        now = self._clock()
        search = bool(patient_id or accession_number)
        try:
            items = query_worklist(host=wl.host, port=wl.port, called_ae=wl.called_ae,
                                   calling_ae=self.config.site.ae_title, modality=wl.modality,
                                   station_ae=self.config.site.ae_title, on=on or now.astimezone().date(),
                                   days_ahead=wl.days_ahead, patient_id=patient_id,
                                   accession_number=accession_number, timeout_s=wl.timeout_s)
        except WorklistError as exc:
            if not cache.exists():
                raise
            cached, saved_at = load_cache_with_time(cache)
            cached = [i for i in cached if (not patient_id or i.patient_id == patient_id)
                      and (not accession_number or i.accession_number == accession_number)]
            LOGGER.warning("worklist: RIS unreachable (%s); showing %d cached step(s) from %s",
                           exc, len(cached), saved_at.isoformat() if saved_at else "an unknown time")
            return WorklistView(items=cached, source="cache", as_of=saved_at, error=str(exc))
        try:
            if not search:  # a search answer is not the day's list: keep the cache whole
                save_cache(items, cache, saved_at=now)
        except OSError as exc:  # the live answer still stands; only the offline copy is stale
            LOGGER.error("worklist cache %s could not be saved: %s", cache, exc)
        return WorklistView(items=items, source="ris", as_of=now)

    def open_exam(self, item: WorklistItem | None) -> Exam:
        """Start an exam; the Study Instance UID comes from the worklist whenever it gives one."""
        root = self.config.site.uid_root
        study_uid = item.study_instance_uid if item and item.study_instance_uid else new_uid(root)
        return Exam(item=item, study_uid=study_uid, series_uid=new_uid(root))

    def expose(self, exam: Exam, technique: Technique | None = None, *, laterality: str | None = None) -> AcquiredImage:
        """Expose, correct, build the DX image and spool it; returns once it is saved.

        Everything that could refuse the image (calibration, anatomy coding, disk space) is
        checked before the tube fires: no dose for an image that cannot be kept.
        """
        try:
            corrector = self.corrector()
        except CalibrationError:
            LOGGER.error("exposure refused: no valid calibration for %s", self.calibration_key)
            raise
        exp_cfg = self.config.exposure
        laterality = laterality or exp_cfg.laterality or None
        check_anatomy(exp_cfg.body_part, exp_cfg.view_position, laterality)
        # Invariant 5: a full disk refuses the exposure before the tube fires, never after.
        self.spool.check_room(self.mode.rows * self.mode.columns * 2 + IMAGE_OVERHEAD_BYTES)
        technique = technique or Technique(kvp=exp_cfg.kvp, mas=exp_cfg.mas)
        stages = _StageClock()
        raw, exposure = self.sequence.expose(technique)
        stages.lap("acquire")
        frame = corrector.apply(raw)
        ei: ExposureIndex | None
        try:
            ei = exposure_index(frame, exp_cfg.target_ei)
        except CalibrationError as exc:  # the dose is given: keep the image, without an EI
            LOGGER.warning("no exposure index for frame %d: %s", raw.meta.frame_number, exc)
            ei = None
        stages.lap("correct")
        ds = build_dx(frame, exposure, exam.item, ei, site=self.config.site, detector=self.detector.info,
                      pixel_spacing_mm=self.mode.pixel_spacing_mm, study_uid=exam.study_uid,
                      series_uid=exam.series_uid, sop_instance_uid=new_uid(self.config.site.uid_root),
                      series_number=exam.series_number, instance_number=len(exam.images) + 1,
                      body_part=exp_cfg.body_part, view_position=exp_cfg.view_position, laterality=laterality,
                      now=self._clock())
        data = to_bytes(ds)
        stages.lap("build")
        instance = self.spool.put(data, sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                                  study_instance_uid=exam.study_uid,
                                  accession_number=exam.item.accession_number if exam.item else "",
                                  destinations=[d.name for d in self.config.destinations])
        stages.lap("spool")
        exam.images.append(instance)
        LOGGER.info("saved %s (frame %d, %s)", instance.sop_instance_uid, raw.meta.frame_number,
                    f"EI {ei.ei:.0f}, DI {ei.deviation_index:+.1f}" if ei else "no EI")
        self._wake.set()
        return AcquiredImage(instance=instance, exposure=exposure, exposure_index=ei, frame=frame,
                             stage_seconds=stages.laps)

    # --- store and forward --------------------------------------------------------------

    def forward_due(self) -> list[DeliveryResult]:
        return self.forwarder.forward_due(self._stop)

    def forwarding_alive(self) -> bool:
        """Whether the forwarding thread runs (for the health check and the watchdog)."""
        return self._forward_thread is not None and self._forward_thread.is_alive()

    def start_forwarding(self) -> None:
        if self._forward_thread is None:
            self._forward_thread = threading.Thread(target=self.forwarder.run, args=(self._stop, self._wake),
                                                    name="dxgate-forward", daemon=True)
            self._forward_thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._forward_thread is not None:
            self._forward_thread.join(timeout=30)
        self.generator.close()
        self.detector.close()
        if self.forwarding_alive():  # mid C-STORE past the join: closing the DB would kill it
            LOGGER.error("forwarder still busy at shutdown; spool left open for it to finish")
            return
        self.spool.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
