"""From a kept raw frame to a saved image, and the storage checks made before the tube fires.

Used by the exam workflow right after each exposure and by `dxgate reprocess` for frames
kept when their image could not be made (no hardware needed: the kept record carries the
detector identity, the exam and the identity assigned to the image).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gateway.acquisition.raw_store import RawStore, RawStoreError
from gateway.alarms import Alarms
from gateway.config import Config
from gateway.correction import CalibrationStore, Corrector, check_age, exposure_index
from gateway.dicom import DX_FOR_PRESENTATION, IrradiationEvent, build_dx, build_rdsr, collimated_field, to_bytes
from gateway.diskcheck import Need, check_room
from gateway.errors import CalibrationError, DxgateError
from gateway.forward import ObjectSummary, admits, check_routable, destinations_for
from gateway.presentation import PresentationParams, present
from gateway.spool import Spool
from gateway.types import (
    CalibrationKey,
    CorrectedFrame,
    DetectorInfo,
    Exposure,
    ExposureIndex,
    Presentation,
    RawFrame,
    SpooledInstance,
    WorklistItem,
)
from gateway.worklist import decode_item, encode_item

LOGGER = logging.getLogger(__name__)

IMAGE_OVERHEAD_BYTES = 64 * 1024  # header and attributes of a DX object beyond its pixel data
DATABASE_NEED = Need(bytes=1024 * 1024, files=1)  # WAL growth for one exposure's rows, generously


@dataclass(frozen=True)
class ImageContext:
    """Everything besides the frame and the exposure that an image is made from, fixed before
    the tube fires (identity is assigned once: a reprocessed image keeps these UIDs)."""

    item: WorklistItem | None
    study_uid: str
    series_uid: str
    series_number: int
    sop_instance_uid: str
    instance_number: int
    body_part: str
    view_position: str
    laterality: str | None
    target_ei: float
    detector: DetectorInfo
    pixel_spacing_mm: tuple[float, float]
    operator: str = ""
    pps_id: str = ""
    pps_start: datetime | None = None
    mpps_uid: str = ""
    processing_uid: str = ""  # the DX For Processing image's SOP Instance UID ("": none is made)

    def to_json(self) -> dict[str, Any]:
        d = self.detector
        return {"operator": self.operator, "pps_id": self.pps_id, "mpps_uid": self.mpps_uid,
                "processing_uid": self.processing_uid,
                "pps_start": self.pps_start.isoformat() if self.pps_start else None,
                "item": None if self.item is None else encode_item(self.item), "study_uid": self.study_uid,
                "series_uid": self.series_uid, "series_number": self.series_number,
                "sop_instance_uid": self.sop_instance_uid, "instance_number": self.instance_number,
                "body_part": self.body_part, "view_position": self.view_position, "laterality": self.laterality,
                "target_ei": self.target_ei, "pixel_spacing_mm": list(self.pixel_spacing_mm),
                "detector": {"vendor": d.vendor, "model": d.model, "serial": d.serial, "firmware": d.firmware}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImageContext:
        det = d["detector"]
        return cls(item=None if d["item"] is None else decode_item(d["item"]), study_uid=d["study_uid"],
                   series_uid=d["series_uid"], series_number=int(d["series_number"]),
                   sop_instance_uid=d["sop_instance_uid"], instance_number=int(d["instance_number"]),
                   body_part=d["body_part"], view_position=d["view_position"], laterality=d["laterality"],
                   target_ei=float(d["target_ei"]),
                   pixel_spacing_mm=(float(d["pixel_spacing_mm"][0]), float(d["pixel_spacing_mm"][1])),
                   detector=DetectorInfo(vendor=det["vendor"], model=det["model"], serial=det["serial"],
                                         firmware=det["firmware"], modes=()),
                   operator=str(d.get("operator", "")), pps_id=str(d.get("pps_id", "")),  # older records lack them
                   mpps_uid=str(d.get("mpps_uid", "")), processing_uid=str(d.get("processing_uid", "")),
                   pps_start=datetime.fromisoformat(d["pps_start"]) if d.get("pps_start") else None)


@dataclass(frozen=True)
class MadeImage:
    instance: SpooledInstance
    frame: CorrectedFrame
    exposure_index: ExposureIndex | None
    stage_seconds: dict[str, float]
    display: np.ndarray | None = None  # the For Presentation pixels when processed (the console's preview)
    processing_uid: str = ""  # the exposure's DX For Processing image, when the spool holds one


@dataclass(frozen=True)
class ReprocessResult:
    kept_id: str
    sop_instance_uid: str
    outcome: str  # "saved", "already-saved", "failed"
    error: str = ""


class ImagePipeline:
    """Calibrations, the raw store and the spool of one gateway: what turns frames into saved images."""

    def __init__(self, config: Config, *, alarms: Alarms, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 spool_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.alarms = alarms
        self._clock = clock
        self.calibrations = CalibrationStore(config.path(config.calibration.directory))
        self.raw_store = RawStore(config.path(config.spool.raw_directory))
        spool = config.spool
        self.spool = Spool(config.path(spool.directory), config.path(spool.database),
                           min_free_bytes=spool.min_free_mb * 1024 * 1024, clock=spool_clock,
                           busy_timeout_s=spool.db_busy_timeout_s)
        self._corrector: Corrector | None = None
        # The presentation (the longest step) is made here while the other thread finds the
        # collimated field and builds and spools the For Processing image: two cores, both used.
        self._aside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dxgate-present")

    # --- before the tube fires ------------------------------------------------------------

    def check_storage(self, rows: int, columns: int) -> None:
        """Every file system an exposure writes to (raw frame, spool file, state database) is
        writable with room in bytes and inodes, and the database's write lock can be taken."""
        spool = self.config.spool
        n = self.objects_per_exposure()
        check_room({self.raw_store.directory: Need(self.raw_store.record_size(rows, columns)),
                    self.spool.directory: Need((rows * columns * 2 + IMAGE_OVERHEAD_BYTES) * n, files=n),
                    self.spool.database.parent: DATABASE_NEED},
                   min_free_bytes=spool.min_free_mb * 1024 * 1024, min_free_inodes=spool.min_free_inodes)
        self.spool.check_writable()

    def check_routable(self, body_part: str) -> None:
        """Before the tube fires: the image about to be made has a destination (the routing
        filters would otherwise find none after the dose)."""
        check_routable(self.config.destinations, ObjectSummary(str(DX_FOR_PRESENTATION), "DX", body_part))

    def objects_per_exposure(self) -> int:
        """For Presentation always; For Processing too when a destination asks for it."""
        return 2 if any(d.for_processing for d in self.config.destinations) else 1

    def corrector(self, key: CalibrationKey, shape: tuple[int, int], *, max_age_days: float | None) -> Corrector:
        """The corrector of the newest valid calibration for `key`, checked for its age (when a
        limit is given) and for the readout mode's shape."""
        newest = self.calibrations.latest_id(key)
        if self._corrector is None or newest != self._corrector.cal.calibration_id or self._corrector.cal.key != key:
            self._corrector = Corrector(self.calibrations.load(key, max_age_days=max_age_days, now=self._clock()))
        elif max_age_days is not None:
            check_age(self._corrector.cal, max_age_days=max_age_days, now=self._clock())
        cal = self._corrector.cal
        if cal.shape != shape:
            raise CalibrationError(f"calibration {cal.calibration_id} is {cal.shape[0]}x{cal.shape[1]}, mode "
                                   f"{key.mode} reads {shape[0]}x{shape[1]}: recalibrate this mode")
        return self._corrector

    def use(self, corrector: Corrector) -> None:
        self._corrector = corrector

    # --- after the dose -------------------------------------------------------------------

    def make_image(self, raw: RawFrame, exposure: Exposure, ctx: ImageContext, corrector: Corrector,
                   laps: dict[str, float] | None = None) -> MadeImage:
        """Correct, build and spool one image; returns once it is saved."""
        laps = {} if laps is None else laps
        t = time.perf_counter()
        frame = corrector.apply(raw)
        ei: ExposureIndex | None
        try:
            ei = exposure_index(frame, ctx.target_ei)
        except CalibrationError as exc:  # the dose is given: keep the image, without an EI
            LOGGER.warning("no exposure index for frame %d: %s", raw.meta.frame_number, exc)
            ei = None
        laps["correct"], t = time.perf_counter() - t, time.perf_counter()
        cfg = self.config
        presenting = self._aside.submit(_present_timed, frame.pixels, ctx.pixel_spacing_mm,
                                        presentation_params(cfg)) if cfg.presentation.enabled else None
        collimated_field(frame)  # meanwhile: found once here, used by both objects of the exposure
        common: dict[str, Any] = dict(
            site=cfg.site, detector=ctx.detector, pixel_spacing_mm=ctx.pixel_spacing_mm, study_uid=ctx.study_uid,
            series_uid=ctx.series_uid, series_number=ctx.series_number, instance_number=ctx.instance_number,
            body_part=ctx.body_part, view_position=ctx.view_position, laterality=ctx.laterality, now=self._clock(),
            operator=ctx.operator, pps_id=ctx.pps_id, pps_start=ctx.pps_start, mpps_sop_instance_uid=ctx.mpps_uid)
        accession = ctx.item.accession_number if ctx.item else ""
        wanting = [d for d in cfg.destinations if d.for_processing]
        processing_uid = ""
        if ctx.processing_uid and wanting and self.spool.instance(ctx.processing_uid) is not None:
            processing_uid = ctx.processing_uid  # saved before (a reprocess); its record stayed
        elif ctx.processing_uid and wanting:
            # first, so that the For Presentation image (whose UID marks the exposure saved) comes last
            raw_ds = build_dx(frame, exposure, ctx.item, ei, sop_instance_uid=ctx.processing_uid, for_processing=True,
                              **common)
            processing_to = [d.name for d in wanting if admits(d, ObjectSummary.of(raw_ds))]
            if processing_to:
                self.spool.put(to_bytes(raw_ds), sop_instance_uid=ctx.processing_uid,
                               sop_class_uid=raw_ds.SOPClassUID, study_instance_uid=ctx.study_uid,
                               accession_number=accession, destinations=processing_to)
                processing_uid = ctx.processing_uid
        shown: Presentation | None = None
        if presenting is not None:
            shown, laps["present"] = presenting.result()  # its own time; what ran alongside is not a lap
            t = time.perf_counter()
        ds = build_dx(frame, exposure, ctx.item, ei, sop_instance_uid=ctx.sop_instance_uid, presentation=shown,
                      **common)
        data = to_bytes(ds)
        laps["build"], t = time.perf_counter() - t, time.perf_counter()
        instance = self.spool.put(data, sop_instance_uid=ctx.sop_instance_uid, sop_class_uid=ds.SOPClassUID,
                                  study_instance_uid=ctx.study_uid, accession_number=accession,
                                  destinations=destinations_for(cfg.destinations, ObjectSummary.of(ds)))
        laps["spool"] = time.perf_counter() - t
        return MadeImage(instance=instance, frame=frame, exposure_index=ei, stage_seconds=laps,
                         display=None if shown is None else shown.pixels, processing_uid=processing_uid)

    def spool_dose_report(self, events: list[IrradiationEvent], item: WorklistItem | None, *, detector: DetectorInfo,
                          study_uid: str, series_uid: str, sop_instance_uid: str, started: datetime,
                          images: list[tuple[str, str, str]], mpps_uid: str = "", operator: str = ""
                          ) -> SpooledInstance:
        """Build the study's X-Ray Radiation Dose SR (one irradiation event per exposure) and spool
        it for the destinations whose filters take it, as an image is; returns once it is saved."""
        ds = build_rdsr(events, item, site=self.config.site, detector=detector, study_uid=study_uid,
                        series_uid=series_uid, sop_instance_uid=sop_instance_uid, now=self._clock(), started=started,
                        images=images, mpps_sop_instance_uid=mpps_uid, operator=operator)
        return self.spool.put(to_bytes(ds), sop_instance_uid=sop_instance_uid, sop_class_uid=ds.SOPClassUID,
                              study_instance_uid=study_uid, accession_number=item.accession_number if item else "",
                              destinations=destinations_for(self.config.destinations, ObjectSummary.of(ds)))

    def image_made(self, kept_id: str) -> None:
        """The kept frame's image is saved: its raw record goes (or moves to imaged/)."""
        try:
            self.raw_store.imaged(kept_id, keep=self.config.spool.keep_raw_after_image)
        except OSError as exc:  # the image is saved; reprocess will see the UID spooled and skip it
            LOGGER.warning("image of kept frame %s is saved, but its raw record stays: %s", kept_id, exc)

    def reprocess(self, kept_ids: list[str] | None = None) -> list[ReprocessResult]:
        """Make the images of kept frames (all pending ones by default) with today's calibration."""
        ids = kept_ids if kept_ids else [k.kept_id for k in self.raw_store.pending()]
        return [self._reprocess_one(kept_id) for kept_id in ids]

    def _reprocess_one(self, kept_id: str) -> ReprocessResult:
        uid = ""
        try:
            with self.raw_store.locked(kept_id):
                kept = self.raw_store.load(kept_id)
                ctx = ImageContext.from_json(kept.context)
                uid = ctx.sop_instance_uid
                if self.spool.instance(uid) is not None:  # saved before; only its record stayed
                    self.image_made(kept_id)
                    return ReprocessResult(kept_id, uid, "already-saved")
                meta = kept.frame.meta
                corrector = self.corrector(CalibrationKey(meta.detector_serial, meta.mode), (meta.rows, meta.columns),
                                           max_age_days=None)
                made = self.make_image(kept.frame, kept.exposure, ctx, corrector)
                self.image_made(kept_id)
        except (DxgateError, RawStoreError, OSError, KeyError, TypeError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            LOGGER.error("reprocess of kept frame %s failed: %s", kept_id, reason)
            if isinstance(exc, DxgateError) and not isinstance(exc, RawStoreError):
                self.raw_store.note_failure(kept_id, reason)
            return ReprocessResult(kept_id, uid, "failed", reason)
        self.alarms.clear("image-not-made", kept_id)
        LOGGER.info("reprocessed kept frame %s into %s", kept_id, made.instance.sop_instance_uid)
        return ReprocessResult(kept_id, made.instance.sop_instance_uid, "saved")

    def close(self) -> None:
        self._aside.shutdown(wait=True)
        self.spool.close()


def _present_timed(pixels: np.ndarray, pixel_spacing_mm: tuple[float, float],
                   params: PresentationParams) -> tuple[Presentation, float]:
    t = time.perf_counter()
    return present(pixels, pixel_spacing_mm=pixel_spacing_mm, params=params), time.perf_counter() - t


def presentation_params(config: Config) -> PresentationParams:
    p = config.presentation
    return PresentationParams(equalize=p.equalize, equalize_mm=p.equalize_mm, contrast=p.contrast,
                              contrast_mm=p.contrast_mm, edge_amount=p.edge_amount, edge_sigma_mm=p.edge_sigma_mm,
                              noise_coring=p.noise_coring, clahe_clip=p.clahe_clip)


def state_directories(config: Config) -> list[Path]:
    """The directories an exposure writes into, for creating them owner-only."""
    return [config.path(config.calibration.directory), config.path(config.spool.directory),
            config.path(config.spool.raw_directory), config.path(config.spool.database).parent]
