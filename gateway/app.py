"""The composition root: the one module that knows every stage and wires them together.

Detector and generator come from the driver registry (or are injected: a pyusb backend for
the simulator); the stages run in data-flow order up to the spool, which is where an
exposure becomes "saved"; the forwarder drains the spool on its own thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from drivers import registry
from gateway.acquisition import ExposureSequence
from gateway.acquisition.raw_store import RawStoreError
from gateway.alarms import Alarms
from gateway.config import Config
from gateway.correction import CalibrationSet, Corrector, calibrate
from gateway.dicom import check_anatomy, new_uid
from gateway.errors import ConfigError, DxgateError, ExposureRefused, FrameKeptError, WorklistError
from gateway.forward import DeliveryResult, Forwarder
from gateway.imaging import ImageContext, ImagePipeline, state_directories
from gateway.ports import Detector, Generator
from gateway.types import (
    CalibrationKey,
    CorrectedFrame,
    Exposure,
    ExposureIndex,
    RawFrame,
    SpooledInstance,
    Technique,
    WorklistItem,
)
from gateway.worklist import load_cache_with_time, query_worklist, save_cache

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
    stage_seconds: dict[str, float]  # acquire, keep, correct, build, spool: where an exposure's latency goes
    kept_id: str = ""  # the raw record kept through the image's making ("" if it could not be written)


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


def make_state_directories(config: Config) -> None:
    """Create the state directories owner-only when they are new (they hold patient data); an
    existing directory keeps its permissions (a --home of /tmp must not become 0700)."""
    for d in [Path(config.state_dir), *state_directories(config)]:
        if not d.exists():
            d.mkdir(mode=0o700, parents=True)


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
        make_state_directories(config)
        self.alarms = Alarms(clock=self._epoch)
        self.pipeline = ImagePipeline(config, alarms=self.alarms, clock=clock, spool_clock=self._epoch)
        self.spool = self.pipeline.spool
        self.calibrations = self.pipeline.calibrations
        self.raw_store = self.pipeline.raw_store
        try:
            self.detector, self.generator = open_hardware(config, usb_backend)
        except BaseException:
            self.pipeline.close()
            raise
        try:
            self.mode = self.detector.info.mode(config.detector.mode)
            self.sequence = ExposureSequence(self.detector, self.generator, alarms=self.alarms,
                                             frame_timeout_s=config.detector.frame_timeout_s, clock=clock)
            self.forwarder = Forwarder(self.spool, config.destinations, calling_ae=config.site.ae_title,
                                       clock=self._epoch)
        except BaseException:
            self.generator.close()  # leave no USB interface claimed, no pty open
            self.detector.close()
            self.pipeline.close()
            raise
        # Frames read after a dose whose raw record could not be written: held here, retried
        # before the next exposure, which is refused while any is left.
        self._unkept: list[tuple[RawFrame, Exposure, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._forward_thread: threading.Thread | None = None
        pending = self.raw_store.pending()
        if pending:
            self.alarms.raise_("frames-awaiting-reprocess",
                               f"{len(pending)} kept raw frame(s) have no image yet: fix the cause named by "
                               "`dxgate reprocess --list`, then run `dxgate reprocess`")

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
        self.pipeline.use(Corrector(cal))
        LOGGER.info("calibration %s stored and active", cal.calibration_id)
        return cal

    def has_calibration(self) -> bool:
        return self.calibrations.latest_id(self.calibration_key) is not None

    def corrector(self) -> Corrector:
        """The corrector of the newest valid calibration set, checked again at every exposure:
        a set that aged past its limit while the daemon ran is refused, a newer one is used,
        and one of another shape than the armed mode is refused."""
        return self.pipeline.corrector(self.calibration_key, (self.mode.rows, self.mode.columns),
                                       max_age_days=self.config.calibration.max_age_days)

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

    def preflight(self, technique: Technique, body_part: str, view_position: str,
                  laterality: str | None) -> Corrector:
        """Everything that could refuse the image, checked before the tube may fire.

        Raises ExposureRefused naming the cause (no X-rays are given); returns the corrector.
        """
        try:
            if self._unkept and not self.retry_unkept():
                raise DxgateError(f"{len(self._unkept)} frame(s) from earlier exposures are held in memory "
                                  "because their raw record could not be written: free the state disk first")
            for name, value, (lo, hi) in (("kV", technique.kvp, KVP_RANGE), ("mAs", technique.mas, MAS_RANGE)):
                if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
                    raise ConfigError(f"technique {name} {value!r} is outside [{lo:g}, {hi:g}]")
            corrector = self.corrector()
            check_anatomy(body_part, view_position, laterality)
            self.pipeline.check_storage(self.mode.rows, self.mode.columns)
        except DxgateError as exc:
            LOGGER.error("exposure refused before the tube fired: %s", exc)
            raise ExposureRefused(f"exposure refused before the tube fired: {exc}") from exc
        return corrector

    def expose(self, exam: Exam, technique: Technique | None = None, *, laterality: str | None = None) -> AcquiredImage:
        """Expose, keep the raw frame, correct, build the DX image and spool it; returns once saved.

        Everything that could refuse the image is checked before the tube fires (ExposureRefused:
        no dose). From the EXPOSE command on, the frame is kept whatever fails: a failure after
        the dose raises FrameKeptError naming the kept frame, which `reprocess` turns into its
        image once the cause is fixed.
        """
        exp_cfg = self.config.exposure
        laterality = laterality or exp_cfg.laterality or None
        technique = technique or Technique(kvp=exp_cfg.kvp, mas=exp_cfg.mas)
        corrector = self.preflight(technique, exp_cfg.body_part, exp_cfg.view_position, laterality)
        root = self.config.site.uid_root
        ctx = ImageContext(item=exam.item, study_uid=exam.study_uid, series_uid=exam.series_uid,
                           series_number=exam.series_number, sop_instance_uid=new_uid(root),
                           instance_number=len(exam.images) + 1, body_part=exp_cfg.body_part,
                           view_position=exp_cfg.view_position, laterality=laterality,
                           target_ei=exp_cfg.target_ei, detector=self.detector.info,
                           pixel_spacing_mm=self.mode.pixel_spacing_mm)
        t0 = time.perf_counter()
        raw, exposure = self.sequence.expose(technique)  # from here on, X-rays may have been given
        laps = {"acquire": time.perf_counter() - t0}
        t0 = time.perf_counter()
        kept_id = self._keep(raw, exposure, ctx.to_json())
        laps["keep"] = time.perf_counter() - t0
        try:
            made = self.pipeline.make_image(raw, exposure, ctx, corrector, laps)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if kept_id:
                self.raw_store.note_failure(kept_id, reason)
                self.alarms.raise_("image-not-made", f"frame {raw.meta.frame_number} is kept as {kept_id}, but "
                                   f"its image could not be made: {reason}; fix the cause, then run "
                                   "`dxgate reprocess`", key=kept_id)
                raise FrameKeptError(f"X-rays were given and frame {raw.meta.frame_number} is kept as {kept_id}, "
                                     f"but its image could not be made: {reason}", kept_id) from exc
            raise FrameKeptError(f"X-rays were given and frame {raw.meta.frame_number} is held in memory only "
                                 f"(its raw record could not be written), and its image could not be made: "
                                 f"{reason}") from exc
        if kept_id:
            self.pipeline.image_made(kept_id)
        else:  # the image is saved: the frame held in memory is no longer needed
            self._unkept = [u for u in self._unkept if u[0] is not raw]
            self.alarms.clear("frame-not-kept", f"frame {raw.meta.frame_number}")
        exam.images.append(made.instance)
        ei = made.exposure_index
        LOGGER.info("saved %s (frame %d, %s)", made.instance.sop_instance_uid, raw.meta.frame_number,
                    f"EI {ei.ei:.0f}, DI {ei.deviation_index:+.1f}" if ei else "no EI")
        self._wake.set()
        return AcquiredImage(instance=made.instance, exposure=exposure, exposure_index=ei, frame=made.frame,
                             stage_seconds=made.stage_seconds, kept_id=kept_id)

    def _keep(self, raw: RawFrame, exposure: Exposure, context: dict[str, Any]) -> str:
        """Write the raw frame durably; on failure hold it in memory and raise an alarm."""
        try:
            return self.raw_store.keep(raw, exposure, context, now=self._clock())
        except RawStoreError as exc:
            self._unkept.append((raw, exposure, context))
            self.alarms.raise_("frame-not-kept", f"frame {raw.meta.frame_number} was read after a dose but could "
                               f"not be written to disk ({exc}); it is held in memory, and exposures are refused "
                               "until it is written", key=f"frame {raw.meta.frame_number}")
            return ""

    def retry_unkept(self) -> bool:
        """Write frames held in memory to the raw store; True when none is left."""
        still = []
        for raw, exposure, context in self._unkept:
            try:
                kept_id = self.raw_store.keep(raw, exposure, context, now=self._clock())
            except RawStoreError as exc:
                LOGGER.error("frame %d still not written: %s", raw.meta.frame_number, exc)
                still.append((raw, exposure, context))
                continue
            self.alarms.clear("frame-not-kept", f"frame {raw.meta.frame_number}")
            self.alarms.raise_("image-not-made", f"frame {raw.meta.frame_number} is now kept as {kept_id}; run "
                               "`dxgate reprocess` to make its image", key=kept_id)
        self._unkept = still
        return not still

    def reprocess(self, kept_ids: list[str] | None = None) -> list[Any]:
        """Make the images of kept raw frames (see ImagePipeline.reprocess)."""
        results = self.pipeline.reprocess(kept_ids)
        if any(r.outcome != "failed" for r in results):
            self._wake.set()
        return results

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
        if self._unkept:
            LOGGER.error("%d frame(s) held in memory are lost at shutdown: their raw record could never be "
                         "written", len(self._unkept))
        if self.forwarding_alive():  # mid C-STORE past the join: closing the DB would kill it
            LOGGER.error("forwarder still busy at shutdown; spool left open for it to finish")
            return
        self.pipeline.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
