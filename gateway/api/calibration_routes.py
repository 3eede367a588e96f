"""Calibration for engineers: start a run in the background, follow it, accept or discard the pending set."""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import Field

from gateway.api.context import ApiContext, Require
from gateway.api.models import ApiModel
from gateway.app import Gateway
from gateway.errors import DxgateError
from gateway.qa.pictures import MAPS, checks_png, map_png
from gateway.users import User

LOGGER = logging.getLogger(__name__)


class CalibrationStart(ApiModel):
    pending: bool = Field(False, description="Keep the new set pending (QA figures taken) until accepted; "
                                            "else it is used at once, as `dxgate calibrate` does.")


class CalibrationDecision(ApiModel):
    """Accept or discard this pending set (named, so the set decided on is the one shown)."""

    calibration_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def pending_json(gw: Gateway) -> dict[str, Any] | None:
    """The pending calibration set and its QA figures (None when none is pending)."""
    key = gw.calibration_key
    pending_id = gw.calibration.pending.pending_id(key)
    if pending_id is None:
        return None
    qa = gw.calibration.pending.qa(key, pending_id)
    return {"calibration_id": pending_id,
            "pictures": {n: f"/api/calibration/pending/{pending_id}/{n}.png" for n in (*MAPS, "qa")},
            "qa": None if qa is None else {k: qa.get(k) for k in ("passed", "checks", "defect_counts", "flats",
                                                                   "largest_cluster", "defect_fraction", "method")}}


def build_calibration_router(ctx: ApiContext, require: Require) -> APIRouter:
    r = APIRouter()
    gw = ctx.gateway
    engineer = require("engineer")

    @r.get("/api/calibration", dependencies=[Depends(engineer)])
    def calibration() -> dict[str, Any]:
        """The run (state, progress) and the pending set with its QA figures, read from disk (a
        set left pending before a restart is still shown)."""
        job = ctx.calibration
        return {"state": job.state, "step": job.step, "done": job.done, "total": job.total,
                "calibration_id": job.calibration_id, "error": job.error, "pending": pending_json(gw)}

    @r.post("/api/calibration")
    def calibration_start(body: CalibrationStart | None = None,
                          user: User = Depends(engineer)) -> dict[str, Any]:  # noqa: B008
        pending = body is not None and body.pending
        job = ctx.calibration
        if not job.lock.acquire(blocking=False):
            raise HTTPException(409, detail="a calibration is already running")
        job.state, job.step, job.done, job.total, job.error, job.calibration_id = "running", "", 0, 0, "", ""

        def progress(step: str, done: int, total: int) -> None:
            job.step, job.done, job.total = step, done, total

        def run() -> None:
            try:
                cal = gw.calibration.calibrate(user.name, progress, pending=pending)
                job.state, job.calibration_id = "done", cal.calibration_id
            except Exception as exc:  # shown to the engineer; the room stays usable
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
                LOGGER.error("calibration failed: %s", job.error)
            finally:
                job.lock.release()

        threading.Thread(target=run, name="dxgate-calibration", daemon=True).start()
        return {"state": "running"}

    pictures: dict[tuple[str, str], bytes] = {}  # (calibration_id, picture): PNG, of the pending set only

    @r.post("/api/calibration/accept")
    def calibration_accept(body: CalibrationDecision, user: User = Depends(engineer)) -> dict[str, Any]:  # noqa: B008
        """The pending set becomes the one in use: the next exposure is corrected with it."""
        if ctx.calibration.lock.locked():
            raise HTTPException(409, detail="a calibration is running")
        try:
            cal = gw.calibration.accept(body.calibration_id, user.name)
        except DxgateError as exc:
            raise HTTPException(409, detail=str(exc)) from None
        pictures.clear()
        return {"calibration_id": cal.calibration_id, "state": "accepted"}

    @r.post("/api/calibration/discard")
    def calibration_discard(body: CalibrationDecision, user: User = Depends(engineer)) -> dict[str, Any]:  # noqa: B008
        """The pending set is deleted; the set in use stays."""
        if ctx.calibration.lock.locked():
            raise HTTPException(409, detail="a calibration is running")
        try:
            gw.calibration.discard(body.calibration_id, user.name)
        except DxgateError as exc:
            raise HTTPException(409, detail=str(exc)) from None
        pictures.clear()
        return {"calibration_id": body.calibration_id, "state": "discarded"}

    @r.get("/api/calibration/pending/{calibration_id}/{name}.png", dependencies=[Depends(engineer)])
    def calibration_picture(calibration_id: str, name: str) -> Response:
        """The pending set's offset, gain or defect map, or its QA chart ("qa"), as a small PNG."""
        if name not in (*MAPS, "qa"):
            raise HTTPException(404, detail=f"no picture {name!r}")
        if (calibration_id, name) not in pictures:
            key = gw.calibration_key
            try:
                cal = gw.calibration.pending.get(key)
            except DxgateError as exc:
                raise HTTPException(500, detail=str(exc)) from None
            if cal is None or cal.calibration_id != calibration_id:
                raise HTTPException(404, detail="no such pending calibration")
            qa = gw.calibration.pending.qa(key, calibration_id) or {}
            pictures.clear()
            for m in MAPS:
                pictures[(calibration_id, m)] = map_png(cal, m)
            pictures[(calibration_id, "qa")] = checks_png(qa.get("checks", []), qa.get("defect_counts", {}))
        return Response(pictures[(calibration_id, name)], media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    return r
