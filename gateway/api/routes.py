"""The local API's routes: what the console and the operator commands do, by role.

Technologists: status, worklist, the exam (open, view, arm, preview, review, close).
Engineers: calibration, the software trigger, queue retry, kept frames. Admins: quarantine
release, the audit trail. Every state-changing route is a POST (CSRF-checked by the auth
layer for every unsafe method). Responses may carry patient data (the console shows it);
log lines never do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.app import Gateway
from gateway.errors import DxgateError, ExposureRefused, FrameKeptError
from gateway.events import EventBus
from gateway.exam_workflow import ReviewedImage
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.qa.pictures import MAPS, checks_png, map_png
from gateway.spool import Delivery
from gateway.types import Anatomy, Technique, WorklistItem
from gateway.users import User

LOGGER = logging.getLogger(__name__)

Require = Callable[[str], Any]  # role -> FastAPI dependency yielding the user


@dataclass
class CalibrationJob:
    """The one calibration that may run at a time, and what the console shows of it."""

    state: str = "idle"  # idle, running, done, failed
    step: str = ""
    done: int = 0
    total: int = 0
    calibration_id: str = ""
    error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class ApiContext:
    gateway: Gateway
    metrics: Metrics
    events: EventBus
    extra_status: Callable[[], dict[str, Any]] = dict
    audit_query: Callable[..., list[dict[str, Any]]] | None = None
    calibration: CalibrationJob = field(default_factory=CalibrationJob)
    config_path: Path | None = None  # the configuration file admins may change (None: not over this API)
    reload_config: Callable[[], str] | None = None  # what SIGHUP does, waited for: the daemon's outcome
    on_config_change: Callable[[str, bool, str], None] | None = None  # (admin, done, description): audit


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class WorklistPick(_Model):
    accession_number: str = Field(max_length=16)
    sps_id: str | None = Field(None, max_length=16)


class ExamOpen(_Model):
    accession_number: str | None = Field(None, max_length=16, description="Pick the worklist entry by accession.")
    sps_id: str | None = Field(None, max_length=16, description="... and scheduled procedure step ID.")
    unscheduled: UnscheduledPatient | None = None
    group: list[WorklistPick] | None = Field(None, min_length=2, max_length=20, description=(
        "The group case: several requested procedures of one patient in one exam (the first's study)."))
    reopen_study_uid: str | None = Field(None, max_length=64, description=(
        "The append case: reopen an exam closed lately (GET /api/exam/closed) to add views to its study."))


class UnscheduledPatient(_Model):
    patient_name: str = Field("", max_length=64 * 5)
    patient_id: str = Field("", max_length=64)
    birth_date: date | None = None
    sex: str = Field("", pattern="^(M|F|O|)$")


class ViewRequest(_Model):
    """A protocol of the room's table (technique adjustable), or a view given in full."""

    protocol: str | None = Field(None, max_length=64)
    body_part: str | None = Field(None, max_length=16)
    view_position: str | None = Field(None, max_length=16)
    laterality: str | None = Field(None, pattern="^(R|L|B|U|)$")
    kvp: float | None = Field(None, ge=40, le=150)
    mas: float | None = Field(None, ge=0.1, le=500)
    target_ei: float = Field(400.0, gt=0, le=100000)

    @model_validator(mode="after")
    def _complete(self) -> ViewRequest:
        if self.protocol is None and None in (self.body_part, self.view_position, self.kvp, self.mas):
            raise ValueError("give a protocol, or body_part, view_position, kvp and mas")
        return self


class ArmRequest(_Model):
    armed: bool = True


class ReviewRequest(_Model):
    status: str = Field(pattern="^(accepted|rejected)$")
    reason: str = Field("", max_length=200)


class CloseRequest(_Model):
    completed: bool = True
    reason: str = Field("", max_length=200)


class CalibrationStart(_Model):
    pending: bool = Field(False, description="Keep the new set pending (QA figures taken) until accepted; "
                                            "else it is used at once, as `dxgate calibrate` does.")


class CalibrationDecision(_Model):
    """Accept or discard this pending set (named, so the set decided on is the one shown)."""

    calibration_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


ExamOpen.model_rebuild()


def _item_json(item: WorklistItem | None) -> dict[str, Any] | None:
    if item is None:
        return None
    d = asdict(item)
    d["patient_birth_date"] = item.patient_birth_date.isoformat() if item.patient_birth_date else None
    d["sps_start"] = item.sps_start.isoformat() if item.sps_start else None
    return d


def _delivery_json(d: Delivery) -> dict[str, Any]:
    return {"sop_instance_uid": d.sop_instance_uid, "destination": d.destination, "state": d.state.value,
            "attempts": d.attempts, "next_attempt_at": d.next_attempt_at, "last_status": d.last_status,
            "last_error": d.last_error, "updated_at": d.updated_at, "size": d.size}


def _reviewed_json(r: ReviewedImage) -> dict[str, Any]:
    ei = r.exposure_index
    exposure = r.exposure
    return {"sop_instance_uid": r.instance.sop_instance_uid, "status": r.status, "reason": r.reason,
            "exposure_index": None if ei is None else round(ei.ei, 1),
            "deviation_index": None if ei is None else round(ei.deviation_index, 2),
            "target_ei": r.view.target_ei, "body_part": r.view.anatomy.body_part,
            "view_position": r.view.anatomy.view_position, "laterality": r.view.anatomy.laterality,
            "dose_known": exposure.dose_known, "problems": list(exposure.problems)}


def _fail(exc: Exception) -> HTTPException:
    if isinstance(exc, ExposureRefused):
        return HTTPException(409, detail=str(exc))
    if isinstance(exc, FrameKeptError):
        return HTTPException(500, detail=str(exc))
    return HTTPException(400, detail=str(exc))


def build_router(ctx: ApiContext, require: Require) -> APIRouter:
    r = APIRouter()
    gw = ctx.gateway
    tech, engineer, admin = require("technologist"), require("engineer"), require("admin")

    @r.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    @r.get("/metrics")
    def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)

    @r.get("/api/status", dependencies=[Depends(tech)])
    def status() -> dict[str, Any]:
        cal_age: float | None
        try:
            cal = gw.corrector().cal
            cal_state, cal_id = "valid", cal.calibration_id
            cal_age = (gw.now() - cal.created_at).total_seconds()
        except DxgateError as exc:
            cal_state, cal_id, cal_age = f"invalid: {exc}", "", None
        view = gw.worklists.last
        disk = os.statvfs(gw.spool.directory)
        return {
            "detector": {"serial": gw.detector.info.serial, "model": gw.detector.info.model,
                         "firmware": gw.detector.info.firmware, "mode": gw.mode.name,
                         "state": gw.sequence.state.value, "panel": asdict(gw.detector.status())},
            "calibration": {"state": cal_state, "calibration_id": cal_id, "age_s": cal_age},
            "worklist": None if view is None else {"source": view.source, "items": len(view.items),
                                                    "as_of": view.as_of.isoformat() if view.as_of else None,
                                                    "error": view.error},
            "queue": [{"destination": d, "state": s, "count": n} for (d, s), n in
                      sorted(gw.spool.counts_by_destination().items())],
            "disk_free_bytes": disk.f_bavail * disk.f_frsize,
            "alarms": [{"code": a.code, "key": a.key, "message": a.message, "severity": a.severity.value}
                       for a in gw.alarms.active()],
            "kept_frames": len(gw.raw_store.pending()),
            **ctx.extra_status(),
        }

    # --- worklist -------------------------------------------------------------------------

    @r.get("/api/worklist", dependencies=[Depends(tech)])
    def worklist(patient_id: str = Query("", max_length=64), accession_number: str = Query("", max_length=16),
                 q: str = Query("", max_length=64)) -> dict[str, Any]:
        if patient_id or accession_number:
            view = gw.worklist(patient_id=patient_id, accession_number=accession_number)
        else:
            view = gw.worklists.last or gw.worklist()
        items = view.items
        if q:
            needle = q.casefold()
            items = [i for i in items if needle in i.patient_name.casefold() or needle in i.patient_id.casefold()
                     or needle in i.accession_number.casefold()]
        return {"source": view.source, "as_of": view.as_of.isoformat() if view.as_of else None, "error": view.error,
                "items": [_item_json(i) for i in items]}

    @r.post("/api/worklist/refresh", dependencies=[Depends(tech)])
    def worklist_refresh() -> dict[str, Any]:
        try:
            view = gw.worklist()
        except DxgateError as exc:
            raise HTTPException(502, detail=str(exc)) from None
        return {"source": view.source, "items": len(view.items)}

    # --- exam -----------------------------------------------------------------------------

    @r.get("/api/exam", dependencies=[Depends(tech)])
    def exam() -> dict[str, Any]:
        ex = gw.exams
        cur = ex.current
        suggested = ex.suggested_protocols()
        return {"open": cur is not None, "armed": ex.armed,
                "exam": None if cur is None else {"study_uid": cur.study_uid, "series_uid": cur.series_uid,
                                                  "series_number": cur.series_number, "reopened": cur.reopened,
                                                  "item": _item_json(cur.item)},
                "view": None if ex.view is None else {**asdict(ex.view.anatomy), **asdict(ex.view.technique),
                                                      "target_ei": ex.view.target_ei},
                "images": [_reviewed_json(i) for i in ex.reviewed],
                "protocols": [{**p.model_dump(), "suggested": p in suggested} for p in ex.protocols()]}

    def pick(p: WorklistPick) -> WorklistItem:
        view = gw.worklists.last or gw.worklist()
        found = [i for i in view.items if i.accession_number == p.accession_number
                 and (p.sps_id is None or i.sps_id == p.sps_id)]
        if len(found) != 1:
            raise HTTPException(404, detail=f"{len(found)} worklist entries match that accession")
        return found[0]

    @r.get("/api/exam/closed", dependencies=[Depends(tech)])
    def exams_closed() -> list[dict[str, Any]]:
        """Exams closed lately (kept across restarts), newest first: what the append case can reopen."""
        return [{"study_uid": c.study_uid, "series_number": c.series_number, "closed_at": c.closed_at,
                 "item": _item_json(c.item)} for c in reversed(gw.exams.closed_exams())]

    @r.post("/api/exam")
    def exam_open(body: ExamOpen, user: User = Depends(tech)) -> dict[str, Any]:  # noqa: B008
        chosen = [x is not None for x in (body.unscheduled, body.accession_number, body.group, body.reopen_study_uid)]
        if sum(chosen) > 1:
            raise HTTPException(422, detail="choose one of accession_number, unscheduled, group and reopen_study_uid")
        try:
            if body.group is not None:
                cur = gw.exams.start_group([pick(p) for p in body.group], operator=user.name)
                return {"study_uid": cur.study_uid, "series_uid": cur.series_uid}
            if body.reopen_study_uid is not None:
                cur = gw.exams.reopen(body.reopen_study_uid, operator=user.name)
                return {"study_uid": cur.study_uid, "series_uid": cur.series_uid}
            if body.unscheduled is not None:
                u = body.unscheduled
                item: WorklistItem | None = WorklistItem(
                    patient_name=u.patient_name, patient_id=u.patient_id, patient_birth_date=u.birth_date,
                    patient_sex=u.sex, accession_number="", study_instance_uid="", requested_procedure_id="",
                    requested_procedure_description="", sps_id="", sps_description="", sps_start=None,
                    modality="DX", scheduled_station_ae="")
            elif body.accession_number is not None:
                item = pick(WorklistPick(accession_number=body.accession_number, sps_id=body.sps_id))
            else:
                item = None
            cur = gw.exams.start(item, operator=user.name)  # Operators' Name: who opened the exam
        except DxgateError as exc:
            raise _fail(exc) from None
        return {"study_uid": cur.study_uid, "series_uid": cur.series_uid}

    @r.post("/api/exam/view", dependencies=[Depends(tech)])
    def exam_view(body: ViewRequest) -> dict[str, Any]:
        try:
            if body.protocol is not None:
                v = gw.exams.choose_protocol(body.protocol, laterality=body.laterality or None, kvp=body.kvp,
                                             mas=body.mas)
            else:
                assert body.body_part and body.view_position is not None and body.kvp and body.mas
                v = gw.exams.choose_view(Anatomy(body.body_part.upper(), body.view_position.upper(),
                                                 body.laterality or None),
                                         Technique(kvp=body.kvp, mas=body.mas), body.target_ei)
        except DxgateError as exc:
            raise _fail(exc) from None
        return {**asdict(v.anatomy), **asdict(v.technique), "target_ei": v.target_ei}

    @r.post("/api/exam/arm", dependencies=[Depends(tech)])
    def exam_arm(body: ArmRequest) -> dict[str, Any]:
        try:
            gw.exams.arm(body.armed)
        except DxgateError as exc:
            raise _fail(exc) from None
        return {"armed": gw.exams.armed}

    @r.post("/api/exam/expose", dependencies=[Depends(engineer)])
    def exam_expose() -> dict[str, Any]:
        """Software trigger (service and QA): the same path as the hand switch."""
        try:
            image = gw.exams.expose_chosen()
        except DxgateError as exc:
            raise _fail(exc) from None
        assert image is not None  # a software trigger exposes or raises
        return {"sop_instance_uid": image.instance.sop_instance_uid}

    @r.get("/api/exam/images/{uid}/preview.png", dependencies=[Depends(tech)])
    def exam_preview(uid: str) -> Response:
        for reviewed in gw.exams.reviewed:
            if reviewed.instance.sop_instance_uid == uid:
                if reviewed.preview is None:
                    raise HTTPException(410, detail="this image's preview is no longer held; the archive has it")
                return Response(reviewed.preview, media_type="image/png",
                                headers={"Cache-Control": "no-store"})
        raise HTTPException(404, detail="no such image in the open exam")

    @r.post("/api/exam/images/{uid}/review", dependencies=[Depends(tech)])
    def exam_review(uid: str, body: ReviewRequest) -> dict[str, Any]:
        try:
            reviewed = gw.exams.review(uid, body.status, body.reason)
        except DxgateError as exc:
            raise _fail(exc) from None
        gw.wake_forwarder()  # an accepted image held for review, or a rejection note, goes now
        return _reviewed_json(reviewed)

    @r.post("/api/exam/close", dependencies=[Depends(tech)])
    def exam_close(body: CloseRequest) -> dict[str, Any]:
        try:
            done = gw.exams.finish(completed=body.completed, reason=body.reason)
        except DxgateError as exc:
            raise _fail(exc) from None
        gw.wake_forwarder()  # images still held for review are released by the close
        return {"study_uid": done.study_uid, "images": len(done.images)}

    # --- calibration (engineer) -----------------------------------------------------------

    @r.get("/api/calibration", dependencies=[Depends(engineer)])
    def calibration() -> dict[str, Any]:
        """The run (state, progress) and the pending set with its QA figures, read from disk (a
        set left pending before a restart is still shown)."""
        job = ctx.calibration
        return {"state": job.state, "step": job.step, "done": job.done, "total": job.total,
                "calibration_id": job.calibration_id, "error": job.error, "pending": _pending_json(gw)}

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

    @r.get("/api/kept", dependencies=[Depends(engineer)])
    def kept() -> list[dict[str, Any]]:
        return [{"kept_id": k.kept_id, "frame_number": k.frame_number, "kept_at": k.kept_at, "reason": k.reason}
                for k in gw.raw_store.pending()]

    @r.post("/api/kept/reprocess", dependencies=[Depends(engineer)])
    def reprocess() -> list[dict[str, Any]]:
        return [asdict(res) for res in gw.reprocess()]

    # --- queue ----------------------------------------------------------------------------

    @r.get("/api/queue", dependencies=[Depends(tech)])
    def queue(state: str | None = None, destination: str | None = None,
              limit: int = Query(100, ge=1, le=10000)) -> list[dict[str, Any]]:
        try:
            return [_delivery_json(d) for d in gw.spool.listing(state=state, destination=destination, limit=limit)]
        except DxgateError as exc:
            raise _fail(exc) from None

    @r.get("/api/queue/{uid}", dependencies=[Depends(tech)])
    def queue_show(uid: str) -> list[dict[str, Any]]:
        rows = gw.spool.deliveries(uid)
        if not rows:
            raise HTTPException(404, detail="no such instance in the queue")
        return [_delivery_json(d) for d in rows]

    @r.post("/api/queue/{uid}/retry", dependencies=[Depends(engineer)])
    def queue_retry(uid: str, destination: str | None = None) -> list[dict[str, Any]]:
        return _each_delivery(gw, uid, destination, "pending", gw.spool.retry_now)

    @r.post("/api/queue/{uid}/release", dependencies=[Depends(admin)])
    def queue_release(uid: str, destination: str | None = None) -> list[dict[str, Any]]:
        return _each_delivery(gw, uid, destination, "quarantined", gw.spool.release)

    @r.post("/api/queue/{uid}/purge", dependencies=[Depends(admin)])
    def queue_purge(uid: str, reason: str = Query(min_length=1, max_length=200),
                    destination: str | None = None) -> list[dict[str, Any]]:
        """Give up the quarantined deliveries of an instance for good (the file stays)."""
        return _each_delivery(gw, uid, destination, "quarantined",
                              lambda u, d: gw.spool.purge(u, d, reason))

    # --- alarms, audit, events ------------------------------------------------------------

    @r.get("/api/alarms", dependencies=[Depends(tech)])
    def alarms() -> list[dict[str, Any]]:
        return [{"code": a.code, "key": a.key, "message": a.message, "severity": a.severity.value,
                 "raised_at": a.raised_at} for a in gw.alarms.active()]

    @r.get("/api/audit", dependencies=[Depends(admin)])
    def audit(since: float | None = None, limit: int = Query(200, ge=1, le=10000)) -> list[dict[str, Any]]:
        if ctx.audit_query is None:
            raise HTTPException(404, detail="no audit trail configured")
        return ctx.audit_query(since=since, limit=limit)

    @r.get("/api/events", dependencies=[Depends(tech)])
    async def events(request: Request) -> StreamingResponse:
        sub = ctx.events.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b": dxgate events\n\n"
                last = time.monotonic()
                while not await request.is_disconnected():
                    event = await asyncio.to_thread(sub.get, 1.0)
                    if event is None:
                        if time.monotonic() - last > 15:
                            yield b": keep-alive\n\n"
                            last = time.monotonic()
                        continue
                    data = json.dumps({"seq": event.seq, "at": event.at, **event.data}, default=_finite)
                    yield f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()
                    last = time.monotonic()
            finally:
                sub.close()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    return r


def _pending_json(gw: Gateway) -> dict[str, Any] | None:
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


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)


def _each_delivery(gw: Gateway, uid: str, destination: str | None, state: str,
                   act: Callable[[str, str], None]) -> list[dict[str, Any]]:
    rows = [d for d in gw.spool.deliveries(uid) if d.state.value == state
            and (destination is None or d.destination == destination)]
    if not rows:
        raise HTTPException(404, detail=f"no {state} delivery of that instance"
                                        + (f" to {destination}" if destination else ""))
    for d in rows:
        act(uid, d.destination)
    gw.wake_forwarder()
    return [_delivery_json(d) for d in gw.spool.deliveries(uid)]
