"""One exposure of an exam: the checks before the tube fires, the frame kept after, the image made."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from gateway.alarms import Alarms
from gateway.config import Config
from gateway.correction import Corrector, check_validity
from gateway.dicom import IrradiationEvent, check_anatomy, irradiation_event_uid, new_uid
from gateway.errors import DxgateError, ExposureRefused, FrameKeptError
from gateway.exam_types import AcquiredImage, Exam, ViewChoice, check_technique
from gateway.frame_keeper import FrameKeeper
from gateway.hardware import Hardware
from gateway.imaging import ImageContext, ImagePipeline
from gateway.mpps import PerformedImage
from gateway.types import Anatomy, SpooledInstance, Technique, WorklistItem
from gateway.worklist.cache import text_problem

LOGGER = logging.getLogger(__name__)


class Exposures:
    """The exposures of one room (one at a time: the sequence serialises them).

    Everything that could refuse an image is checked before the tube fires (ExposureRefused: no
    dose). From the EXPOSE command on, the frame is kept whatever fails — first durably as a raw
    record, then as an image — and a failure after the dose raises FrameKeptError naming the kept
    frame, which `reprocess` turns into its image once the cause is fixed.
    """

    def __init__(self, config: Config, hardware: Hardware, pipeline: ImagePipeline, frames: FrameKeeper, *,
                 alarms: Alarms, clock: Callable[[], datetime], corrector: Callable[[], Corrector],
                 view: Callable[[], ViewChoice | None], on_step: Callable[[Exam], None],
                 on_saved: Callable[[SpooledInstance], None]) -> None:
        self._config = config
        self._hw = hardware
        self._pipeline = pipeline
        self._frames = frames
        self._alarms = alarms
        self._clock = clock
        self._corrector = corrector
        self._view = view  # the view chosen now (its protocol names the exposure)
        self._on_step = on_step  # an image of the exam is saved: its procedure step has started
        self._on_saved = on_saved
        self._calibration_warned: set[str] = set()  # calibration warnings logged (once each, not per re-check)

    def preflight(self, technique: Technique, body_part: str, view_position: str,
                  laterality: str | None, target_ei: float = 400.0, item: WorklistItem | None = None) -> Corrector:
        """Everything that could refuse the image, checked before the tube may fire.

        Raises ExposureRefused naming the cause (no X-rays are given); returns the corrector.
        """
        try:
            if self._frames.unkept and not self._frames.retry_unkept():
                raise DxgateError(f"{len(self._frames.unkept)} frame(s) from earlier exposures are held in memory "
                                  "because their raw record could not be written: free the state disk first")
            check_technique(technique, target_ei)
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

    def acquire(self, exam: Exam, technique: Technique | None = None, *, laterality: str | None = None,
                anatomy: Anatomy | None = None, target_ei: float | None = None,
                hand_switch: threading.Event | None = None, recheck_s: float) -> AcquiredImage | None:
        """Expose (now, or on the hand switch while `hand_switch` is not set), keep the raw frame,
        make and spool the image; None when a hand-switch release is withdrawn before it fired."""
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
                                                                      exam.item), recheck_s=recheck_s)
            if acquired is None:
                return None  # the release was withdrawn before the hand switch fired: no X-rays
            raw, exposure = acquired
        laps = {"acquire": time.perf_counter() - t0}
        LOGGER.info("read frame %d", raw.meta.frame_number)  # the end of readout: where latency counts from
        # First: nothing may stand between the dose and keeping its frame. It is written while
        # the image is made, and waited for on every way out of here.
        keeping = self._frames.start(raw, exposure, ctx)
        try:
            exam.detector = ctx.detector
            view = self._view()
            exam.irradiations.append(IrradiationEvent(  # X-rays were given: the dose report lists it, image or not
                event_uid=irradiation_event_uid(root, raw.meta), exposure=exposure, body_part=anatomy.body_part,
                view_position=anatomy.view_position, laterality=laterality, image_uid=ctx.sop_instance_uid,
                protocol=view.protocol if view else ""))
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
            self._frames.forget(raw)
        exam.images.append(made.instance)
        view_now = self._view()
        exam.performed.append(PerformedImage(series_uid=exam.series_uid, sop_class_uid=made.instance.sop_class_uid,
                                             sop_instance_uid=made.instance.sop_instance_uid,
                                             protocol_name=view_now.protocol if view_now else ""))
        self._on_step(exam)
        ei = made.exposure_index
        LOGGER.info("saved %s (frame %d, %s; ms %s)", made.instance.sop_instance_uid, raw.meta.frame_number,
                    f"EI {ei.ei:.0f}, DI {ei.deviation_index:+.1f}" if ei else "no EI",
                    " ".join(f"{k} {v * 1000:.0f}" for k, v in made.stage_seconds.items()))
        self._on_saved(made.instance)
        return AcquiredImage(instance=made.instance, exposure=exposure, exposure_index=ei, frame=made.frame,
                             stage_seconds=made.stage_seconds, kept_id=kept_id, display=made.display,
                             processing_uid=made.processing_uid)
