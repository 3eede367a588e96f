"""The exam for technologists: open (worklist, unscheduled, group, reopen), view, arm, expose, review, close."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import Field, model_validator

from gateway.api.context import ApiContext, Require
from gateway.api.models import ApiModel, fail, item_json
from gateway.errors import DxgateError
from gateway.exam_workflow import ReviewedImage
from gateway.types import Anatomy, Technique, WorklistItem
from gateway.users import User


class WorklistPick(ApiModel):
    accession_number: str = Field(max_length=16)
    sps_id: str | None = Field(None, max_length=16)


class UnscheduledPatient(ApiModel):
    patient_name: str = Field("", max_length=64 * 5)
    patient_id: str = Field("", max_length=64)
    birth_date: date | None = None
    sex: str = Field("", pattern="^(M|F|O|)$")


class ExamOpen(ApiModel):
    accession_number: str | None = Field(None, max_length=16, description="Pick the worklist entry by accession.")
    sps_id: str | None = Field(None, max_length=16, description="... and scheduled procedure step ID.")
    unscheduled: UnscheduledPatient | None = None
    group: list[WorklistPick] | None = Field(None, min_length=2, max_length=20, description=(
        "The group case: several requested procedures of one patient in one exam (the first's study)."))
    reopen_study_uid: str | None = Field(None, max_length=64, description=(
        "The append case: reopen an exam closed lately (GET /api/exam/closed) to add views to its study."))


class ViewRequest(ApiModel):
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


class ArmRequest(ApiModel):
    armed: bool = True


class ReviewRequest(ApiModel):
    status: str = Field(pattern="^(accepted|rejected)$")
    reason: str = Field("", max_length=200)


class CloseRequest(ApiModel):
    completed: bool = True
    reason: str = Field("", max_length=200)


def reviewed_json(r: ReviewedImage) -> dict[str, Any]:
    ei = r.exposure_index
    exposure = r.exposure
    return {"sop_instance_uid": r.instance.sop_instance_uid, "status": r.status, "reason": r.reason,
            "exposure_index": None if ei is None else round(ei.ei, 1),
            "deviation_index": None if ei is None else round(ei.deviation_index, 2),
            "target_ei": r.view.target_ei, "body_part": r.view.anatomy.body_part,
            "view_position": r.view.anatomy.view_position, "laterality": r.view.anatomy.laterality,
            "dose_known": exposure.dose_known, "problems": list(exposure.problems)}


def build_exam_router(ctx: ApiContext, require: Require) -> APIRouter:
    r = APIRouter()
    gw = ctx.gateway
    tech, engineer = require("technologist"), require("engineer")

    @r.get("/api/exam", dependencies=[Depends(tech)])
    def exam() -> dict[str, Any]:
        ex = gw.exams
        cur = ex.current
        suggested = ex.suggested_protocols()
        return {"open": cur is not None, "armed": ex.armed,
                "exam": None if cur is None else {"study_uid": cur.study_uid, "series_uid": cur.series_uid,
                                                  "series_number": cur.series_number, "reopened": cur.reopened,
                                                  "item": item_json(cur.item)},
                "view": None if ex.view is None else {**asdict(ex.view.anatomy), **asdict(ex.view.technique),
                                                      "target_ei": ex.view.target_ei},
                "images": [reviewed_json(i) for i in ex.reviewed],
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
                 "item": item_json(c.item)} for c in reversed(gw.exams.closed_exams())]

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
            raise fail(exc) from None
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
            raise fail(exc) from None
        return {**asdict(v.anatomy), **asdict(v.technique), "target_ei": v.target_ei}

    @r.post("/api/exam/arm", dependencies=[Depends(tech)])
    def exam_arm(body: ArmRequest) -> dict[str, Any]:
        try:
            gw.exams.arm(body.armed)
        except DxgateError as exc:
            raise fail(exc) from None
        return {"armed": gw.exams.armed}

    @r.post("/api/exam/expose", dependencies=[Depends(engineer)])
    def exam_expose() -> dict[str, Any]:
        """Software trigger (service and QA): the same path as the hand switch."""
        try:
            image = gw.exams.expose_chosen()
        except DxgateError as exc:
            raise fail(exc) from None
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
            raise fail(exc) from None
        gw.wake_forwarder()  # an accepted image held for review, or a rejection note, goes now
        return reviewed_json(reviewed)

    @r.post("/api/exam/close", dependencies=[Depends(tech)])
    def exam_close(body: CloseRequest) -> dict[str, Any]:
        try:
            done = gw.exams.finish(completed=body.completed, reason=body.reason)
        except DxgateError as exc:
            raise fail(exc) from None
        gw.wake_forwarder()  # images still held for review are released by the close
        return {"study_uid": done.study_uid, "images": len(done.images)}

    return r
