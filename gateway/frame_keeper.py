"""Keeping the raw frame of every dose: written on its own thread, held in memory when it cannot be."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from gateway.acquisition.raw_store import RawStoreError
from gateway.alarms import Alarms
from gateway.imaging import ImageContext, ImagePipeline
from gateway.types import Exposure, RawFrame, Technique

LOGGER = logging.getLogger(__name__)


class FrameKeeper:
    """The raw frames read after a dose, kept durably as raw records whatever fails afterwards."""

    def __init__(self, pipeline: ImagePipeline, *, alarms: Alarms, clock: Callable[[], datetime]) -> None:
        self._pipeline = pipeline
        self._alarms = alarms
        self._clock = clock
        # Frames read after a dose whose raw record could not be written: held here, retried
        # before the next exposure, which is refused while any is left.
        self.unkept: list[tuple[RawFrame, Exposure, dict[str, Any]]] = []
        # The raw frame goes to disk on its own thread while its image is made (hashing, writing
        # and fsyncing 19 MB would otherwise stand between the readout and the archive).
        self._keeper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dxgate-keep")

    def start(self, raw: RawFrame, exposure: Exposure, ctx: ImageContext) -> Future[tuple[str, float]]:
        """Keep the frame on the keeper thread (here, if that thread is gone); the future never
        raises: a frame that cannot be written is held in memory (see keep)."""
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
        return self.keep(raw, exposure, context), time.perf_counter() - t0

    def keep(self, raw: RawFrame, exposure: Exposure, context: dict[str, Any]) -> str:
        """Write the raw frame durably; on failure hold it in memory and raise an alarm."""
        try:
            return self._pipeline.raw_store.keep(raw, exposure, context, now=self._clock())
        except Exception as exc:  # RawStoreError or anything unforeseen: the frame must not be dropped
            self.unkept.append((raw, exposure, context))
            self._alarms.raise_("frame-not-kept", f"frame {raw.meta.frame_number} was read after a dose but could "
                               f"not be written to disk ({exc}); it is held in memory, and exposures are refused "
                               "until it is written", key=f"frame {raw.meta.frame_number}")
            return ""

    def forget(self, raw: RawFrame) -> None:
        """The frame's image is saved: the frame held in memory is no longer needed."""
        self.unkept = [u for u in self.unkept if u[0] is not raw]
        self._alarms.clear("frame-not-kept", f"frame {raw.meta.frame_number}")

    def keep_recovered(self, frames: list[RawFrame]) -> list[str]:
        """Keep frames the panel held when it was opened (X-rays given, the host gone before
        their image was saved): raw records with the dose unknown and no exam, and an alarm each."""
        kept = []
        for raw in frames:
            exposure = Exposure(requested=Technique(kvp=0.0, mas=0.0), actual=None, started_at=raw.meta.acquired_at,
                                problems=("dose unknown: frame found on the panel at start-up",))
            kept_id = self.keep(raw, exposure, {"recovered_at_startup": True})
            if kept_id:
                self._alarms.raise_("frame-recovered", f"frame {raw.meta.frame_number} was found on the panel at "
                                   f"start-up (X-rays were given, no image was saved) and is kept as {kept_id}; "
                                   "its exam is unknown: an engineer must assign it", key=kept_id)
                kept.append(kept_id)
        return kept

    def retry_unkept(self) -> bool:
        """Write frames held in memory to the raw store; True when none is left."""
        still = []
        for raw, exposure, context in self.unkept:
            try:
                kept_id = self._pipeline.raw_store.keep(raw, exposure, context, now=self._clock())
            except RawStoreError as exc:
                LOGGER.error("frame %d still not written: %s", raw.meta.frame_number, exc)
                still.append((raw, exposure, context))
                continue
            self._alarms.clear("frame-not-kept", f"frame {raw.meta.frame_number}")
            self._alarms.raise_("image-not-made", f"frame {raw.meta.frame_number} is now kept as {kept_id}; run "
                               "`dxgate reprocess` to make its image", key=kept_id)
        self.unkept = still
        return not still

    def close(self) -> None:
        """Finish a frame being written; frames still held in memory are lost (logged)."""
        self._keeper.shutdown(wait=True)  # a frame being written is finished first
        if self.unkept:
            LOGGER.error("%d frame(s) held in memory are lost at shutdown: their raw record could never be "
                         "written", len(self.unkept))
