"""The technologist's review of an exam's images: previews kept, verdicts recorded and applied to deliveries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from gateway.alarms import Alarms
from gateway.config import Config
from gateway.dicom.dx import DX_FOR_PRESENTATION, DX_FOR_PROCESSING
from gateway.dicom.preview import preview_png
from gateway.errors import DxgateError
from gateway.exam_types import AcquiredImage, ReviewedImage, ViewChoice
from gateway.imaging import ImagePipeline
from gateway.rejection import apply_verdict
from gateway.review_stats import ReviewLog, record_of

LOGGER = logging.getLogger(__name__)


def preview_of(image: AcquiredImage) -> bytes | None:
    """The PNG the console shows of a saved image; None (logged) when it cannot be made."""
    try:
        return preview_png(image.frame.pixels if image.display is None else image.display)
    except DxgateError as exc:  # the image is saved; only its preview is missing
        LOGGER.error("no preview for %s: %s", image.instance.sop_instance_uid, exc)
        return None


def add_for_review(reviewed: list[ReviewedImage], image: AcquiredImage, view: ViewChoice, preview: bytes | None,
                   *, previews_kept: int) -> None:
    """Add a saved image to the exam's review list; only the latest `previews_kept` keep their preview."""
    reviewed.append(ReviewedImage(instance=image.instance, exposure=image.exposure,
                                  exposure_index=image.exposure_index, view=view, preview=preview,
                                  processing_uid=image.processing_uid))
    for older in reviewed[:-previews_kept]:
        older.preview = None


def check_verdict(status: str, reason: str) -> None:
    """A verdict is accepted or rejected, and a rejection needs a reason (DxgateError otherwise)."""
    if status not in ("accepted", "rejected"):
        raise DxgateError(f"review status must be accepted or rejected, not {status!r}")
    if status == "rejected" and not reason.strip():
        raise DxgateError("a rejected image needs a reason")


def mark(reviewed: list[ReviewedImage], sop_instance_uid: str, status: str, reason: str) -> ReviewedImage:
    """Set the verdict on the exam's image of that UID (DxgateError when the exam has none)."""
    for r in reviewed:
        if r.instance.sop_instance_uid == sop_instance_uid:
            r.status, r.reason = status, reason.strip()
            return r
    raise DxgateError(f"no image {sop_instance_uid} in the open exam")


class Verdicts:
    """Verdicts recorded for reject analysis and applied to the images' deliveries (held, released, withdrawn)."""

    def __init__(self, config: Config, pipeline: ImagePipeline, *, alarms: Alarms,
                 clock: Callable[[], datetime]) -> None:
        self._pipeline = pipeline
        self._alarms = alarms
        self._clock = clock
        self._kos_made: set[str] = set()  # images a rejection note was made for (one note per image)
        self.log = ReviewLog(config.path(config.spool.database).parent / "reviews.db")  # reject analysis
        if config.review.hold_s > 0:  # clinical images wait for the technologist's verdict
            pipeline.spool.hold_for_review(  # destinations as now configured (SIGHUP reloads them)
                config.review.hold_s, frozenset({DX_FOR_PRESENTATION, DX_FOR_PROCESSING}),
                unheld=lambda: {d.name for d in pipeline.config.destinations if not d.review_hold})
        pipeline.spool.keep_rejected_s = config.review.keep_rejected_days * 86400.0  # then retention deletes them

    def apply(self, r: ReviewedImage, operator: str, *, reviewed: bool = True) -> None:
        """Record the verdict for reject analysis, then release (accepted) or withhold (rejected)
        the image's deliveries; a failure is alarmed, the verdict stands."""
        sop_instance_uid, status = r.instance.sop_instance_uid, "accepted" if r.status == "new" else r.status
        try:
            self.log.record(record_of(
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

    def close(self) -> None:
        self.log.close()
