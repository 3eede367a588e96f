"""What the web console needs beyond the operator API: its choices (views, protocols, reject
reasons, deviation-index bands), the room at a glance, and the forwarding of the open exam.

Read-only: technologist and up, the calibration steps for engineers. The DI bands live here
once: the page colours EI and DI with them and docs/console.md states them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import pydicom
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response
from pydicom.errors import InvalidDicomError

from gateway import anatomy
from gateway.api.routes import ApiContext, _delivery_json
from gateway.calibration_workflow import dark_instruction, flat_instruction
from gateway.errors import DxgateError
from gateway.review_stats import ReviewRecord, records_csv, summary, summary_csv

# Reject reason categories after AAPM TG-305's schema (the reason is stored as the label).
REJECT_REASONS = (
    ("positioning", "Positioning"),
    ("clipped", "Clipped anatomy / collimation"),
    ("motion", "Patient motion"),
    ("underexposed", "Underexposure"),
    ("overexposed", "Overexposure"),
    ("artifact", "Artifact"),
    ("wrong", "Wrong patient, exam or protocol"),
    ("equipment", "Equipment or software failure"),
    ("test", "Test image"),
    ("other", "Other"),
)


@dataclass(frozen=True)
class DiBand:
    """|DI| up to `max_abs` (and above the previous band) gets this colour and meaning."""

    name: str
    max_abs: float | None  # None: everything beyond the previous band
    colour: str
    meaning: str


# AAPM Report 116 (Table 2): -0.5..+0.5 is the target range; beyond +/-1 an exposure is
# over or under by more than ~26 %; beyond +/-3 (a factor of 2) action is needed.
DI_BANDS = (
    DiBand("target", 0.5, "green", "within the target range"),
    DiBand("acceptable", 1.0, "lightgreen", "acceptable (within about 26 % of target)"),
    DiBand("review", 3.0, "yellow", "over- or underexposed: check the image and the technique"),
    DiBand("action", None, "red", "excessive over- or underexposure: investigate; repeat only if not diagnostic"),
)


SECRET_WORDS = ("password", "passphrase", "secret", "token", "key", "credential")
REDACTED = "(redacted)"


def redact(value: Any, name: str = "") -> Any:
    """A copy of a configuration tree with every value whose name speaks of a secret (key files,
    passwords, tokens...) replaced by REDACTED when it is set; empty ones stay empty."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, name) for v in value]
    lowered = name.lower()
    if value not in ("", None) and any(w in lowered for w in SECRET_WORDS) and not isinstance(value, bool):
        return REDACTED
    if isinstance(value, str) and value.startswith("credential:"):
        return REDACTED
    return value


def _finite_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


def _csv(body: str, filename: str) -> Response:
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


def di_band(di: float) -> DiBand:
    for band in DI_BANDS:
        if band.max_abs is None or abs(di) <= band.max_abs:
            return band
    return DI_BANDS[-1]


def build_console_router(ctx: ApiContext, require: Callable[[str], Any]) -> APIRouter:
    r = APIRouter()
    gw = ctx.gateway
    tech, engineer = require("technologist"), require("engineer")

    @r.get("/api/console/options", dependencies=[Depends(tech)])
    def options() -> dict[str, Any]:
        """The room's protocol table ([[protocols]]), those the open exam's order asks for first."""
        suggested = gw.exams.suggested_protocols()
        return {"body_parts": [{"term": b.term, "meaning": b.meaning, "paired": b.paired}
                               for b in anatomy.BODY_PARTS.values()],
                "views": [{"term": t, "meaning": v.meaning} for t, v in anatomy.VIEWS.items()],
                "lateralities": list(anatomy.LATERALITIES),
                "protocols": [{**p.model_dump(), "suggested": p in suggested} for p in gw.exams.protocols()],
                "reject_reasons": [{"code": c, "label": label} for c, label in REJECT_REASONS],
                "di_bands": [asdict(b) for b in DI_BANDS]}

    @r.get("/api/console/room", dependencies=[Depends(tech)])
    def room() -> dict[str, Any]:
        try:
            cal = gw.corrector().cal
            calibration = {"valid": True, "age_s": round((gw.now() - cal.created_at).total_seconds(), 1),
                           "problem": ""}
        except DxgateError as exc:
            calibration = {"valid": False, "age_s": None, "problem": str(exc)}
        view = gw.worklists.last
        return {"detector": {"model": gw.detector.info.model, "mode": gw.mode.name,
                             "temperature_c": ctx.metrics.levels.detector_temperature_c()},
                "exposure_state": gw.sequence.state.value, "armed": gw.exams.armed,
                "calibration": calibration,
                "worklist": None if view is None else {"source": view.source, "error": view.error,
                                                       "as_of": view.as_of.isoformat() if view.as_of else None},
                "alarms": [{"code": a.code, "message": a.message, "severity": a.severity.value}
                           for a in gw.alarms.active()]}

    @r.get("/api/console/forwarding", dependencies=[Depends(tech)])
    def forwarding() -> dict[str, list[dict[str, Any]]]:
        """Each image of the open exam: its delivery to every destination."""
        uids = [i.instance.sop_instance_uid for i in list(gw.exams.reviewed)]
        return {uid: [_delivery_json(d) for d in gw.spool.deliveries(uid)] for uid in uids}

    @r.get("/api/console/images/{uid}/collimation", dependencies=[Depends(tech)])
    def collimation(uid: str) -> dict[str, Any]:
        """The X-Ray Collimator edges the DX image of the open exam carries, with its size (the
        page scales them to the preview); `shape` "" when the image has none."""
        if uid not in {i.instance.sop_instance_uid for i in list(gw.exams.reviewed)}:
            raise HTTPException(404, detail="no such image in the open exam")
        instance = gw.spool.instance(uid)
        if instance is None:
            raise HTTPException(404, detail="no such image in the spool")
        try:
            ds = pydicom.dcmread(instance.path, stop_before_pixels=True)
        except (OSError, InvalidDicomError) as exc:
            raise HTTPException(410, detail=f"the image's file cannot be read: {type(exc).__name__}") from None
        edges = ("CollimatorLeftVerticalEdge", "CollimatorRightVerticalEdge", "CollimatorUpperHorizontalEdge",
                 "CollimatorLowerHorizontalEdge")
        shape = str(ds.get("CollimatorShape", ""))
        if shape != "RECTANGULAR" or any(e not in ds for e in edges):
            return {"shape": "", "columns": int(ds.Columns), "rows": int(ds.Rows)}
        left, right, upper, lower = (int(ds[e].value) for e in edges)
        return {"shape": shape, "columns": int(ds.Columns), "rows": int(ds.Rows), "left": left, "right": right,
                "upper": upper, "lower": lower}

    @r.get("/api/console/calibration-steps", dependencies=[Depends(engineer)])
    def calibration_steps() -> list[dict[str, str]]:
        """What the engineer does before a calibration (the steps of `dxgate calibrate`)."""
        return [{"step": "dark", "instruction": dark_instruction()},
                {"step": "flat", "instruction": flat_instruction(gw.config)}]

    def _records(since: float | None, until: float | None) -> list[ReviewRecord]:
        return gw.exams.review_log.records(since, until)

    @r.get("/api/console/review-stats", dependencies=[Depends(engineer)])
    def review_stats(since: float | None = Query(None, description="From this time (epoch s) on."),
                     until: float | None = Query(None, description="Before this time (epoch s).")) -> dict[str, Any]:
        """Reject analysis (TG-305) and EI/DI statistics (TG-151) per body part and view."""
        return {"reasons": [{"code": c, "label": label} for c, label in REJECT_REASONS],
                "stats": [_finite_dict(asdict(s)) for s in summary(_records(since, until))]}

    @r.get("/api/console/review-stats.csv", dependencies=[Depends(engineer)])
    def review_stats_csv(since: float | None = None, until: float | None = None) -> Response:
        body = summary_csv(summary(_records(since, until)), [c for c, _ in REJECT_REASONS])
        return _csv(body, "review-stats.csv")

    @r.get("/api/console/reviews.csv", dependencies=[Depends(engineer)])
    def reviews_csv(since: float | None = None, until: float | None = None) -> Response:
        """One row per judged image (TG-305 per-image export; no patient data)."""
        return _csv(records_csv(_records(since, until)), "reviews.csv")

    @r.get("/api/console/config", dependencies=[Depends(engineer)])
    def config_view() -> dict[str, Any]:
        """The running configuration, read-only, secrets redacted (engineers and admins)."""
        redacted: dict[str, Any] = redact(gw.config.model_dump(mode="json"))
        return redacted

    return r
