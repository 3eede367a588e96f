"""The room at a glance for operators and monitoring: liveness, metrics, the status and active alarms."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Response

from gateway.api.context import ApiContext, Require
from gateway.errors import DxgateError
from gateway.metrics import CONTENT_TYPE


def build_status_router(ctx: ApiContext, require: Require) -> APIRouter:
    r = APIRouter()
    gw = ctx.gateway
    tech = require("technologist")

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

    @r.get("/api/alarms", dependencies=[Depends(tech)])
    def alarms() -> list[dict[str, Any]]:
        return [{"code": a.code, "key": a.key, "message": a.message, "severity": a.severity.value,
                 "raised_at": a.raised_at} for a in gw.alarms.active()]

    return r
