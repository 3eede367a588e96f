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
from fastapi.responses import FileResponse, Response
from pydicom.errors import InvalidDicomError

from gateway import anatomy
from gateway.api.context import ApiContext
from gateway.api.models import delivery_json
from gateway.calibration_workflow import dark_instruction, flat_instruction
from gateway.correction.store import calibrated_at
from gateway.errors import DxgateError
from gateway.qa import history
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


# A kept QA page is shown as it was written: its inline styles and data: pictures, never a
# script, a request to anywhere, a form or a plug-in; sandboxed even when opened in its own tab.
QA_PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; "
                                "connect-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; "
                                "frame-ancestors 'self'; sandbox"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
QA_FIGURES = ("mean_signal", "mean_noise", "mean_snr")  # the uniformity figures the list shows


def qa_summary(report_id: str, doc: dict[str, Any], has_page: bool) -> dict[str, Any]:
    """One kept QA report as the console lists it: identity, result, the main figures, its checks."""
    uniformity = doc.get("uniformity") or {}
    return {"id": report_id, "made_at": doc["made_at"], "detector_serial": doc.get("detector_serial"),
            "mode": doc.get("mode"), "calibration_id": doc.get("calibration_id"), "passed": bool(doc.get("passed")),
            "flats": doc.get("flats"), "figures": {k: uniformity.get(k) for k in QA_FIGURES},
            "defect_fraction": doc.get("defect_fraction"), "largest_cluster": doc.get("largest_cluster"),
            "defect_counts": doc.get("defect_counts") or {},
            "checks": [{k: c.get(k) for k in ("name", "value", "limit", "passed")} for c in doc.get("checks", [])],
            "page": f"/api/console/qa/{report_id}.html" if has_page else None}


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
        now = gw.spool.now()
        return {uid: [delivery_json(d, now) for d in gw.spool.deliveries(uid)] for uid in uids}

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

    def qa_directory() -> Any:
        return gw.config.path(gw.config.calibration.qa_directory)

    @r.get("/api/console/qa", dependencies=[Depends(engineer)])
    def qa_reports() -> dict[str, Any]:
        """The kept QA reports (`dxgate qa`) of the room's panels, newest first."""
        directory = qa_directory()
        reports = []
        for report_id, doc in history.kept(directory):
            serial, mode, name = report_id.split("/")
            reports.append(qa_summary(report_id, doc, history.page(directory, serial, mode, name) is not None))
        return {"detector_serial": gw.detector.info.serial, "mode": gw.mode.name, "reports": reports}

    @r.get("/api/console/qa/trend", dependencies=[Depends(engineer)])
    def qa_trend(serial: str = Query("", max_length=64), mode: str = Query("", max_length=64)) -> dict[str, Any]:
        """Each check's value over the kept reports of one panel and mode (default: the room's), oldest
        first, with the limit and result of each report."""
        serial, mode = serial or gw.detector.info.serial, mode or gw.mode.name
        try:
            docs = history.earlier(qa_directory(), serial, mode)
        except ValueError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        return {"detector_serial": serial, "mode": mode, "reports": len(docs),
                "checks": [{"name": name, "limit": points[-1]["limit"], "points": points}
                           for name, points in history.series(docs).items()]}

    @r.get("/api/console/qa/{serial}/{mode}/{name}.html", dependencies=[Depends(engineer)])
    def qa_page(serial: str, mode: str, name: str) -> FileResponse:
        """One report's self-contained page, exactly as kept, under a policy that runs no script."""
        try:
            path = history.page(qa_directory(), serial, mode, name)
        except ValueError:
            raise HTTPException(404, detail="no such QA report") from None
        if path is None:
            raise HTTPException(404, detail="no page was kept for this QA report")
        return FileResponse(path, media_type="text/html; charset=utf-8", headers=QA_PAGE_HEADERS)

    @r.get("/api/console/diagnostics", dependencies=[Depends(engineer)])
    def diagnostics() -> dict[str, Any]:
        """What a field engineer checks of the panel: identity, state and temperature, the calibration
        set in use (age, temperature then and drift now, defects by class, last offset refresh), and
        the frame counters the driver and the pipeline keep."""
        info, cfg = gw.detector.info, gw.config.calibration
        panel = gw.detector.status()
        temperature = panel.temperature_c
        if temperature is None:
            temperature = ctx.metrics.levels.detector_temperature_c()
        calibration: dict[str, Any]
        try:
            cal = gw.corrector().cal
        except DxgateError as exc:
            calibration = {"valid": False, "problem": str(exc)}
        else:
            prov = cal.provenance
            gain_at = calibrated_at(cal)
            refreshed = "offset_refreshed_from" in prov
            calibration = {
                "valid": True, "problem": "", "calibration_id": cal.calibration_id,
                "calibrated_at": gain_at.isoformat(), "age_s": round((gw.now() - gain_at).total_seconds(), 1),
                "temperature_c": round(cal.temperature_c, 2),
                "drift_c": None if temperature is None else round(temperature - cal.temperature_c, 2),
                "warn_drift_c": cfg.warn_temperature_drift_c, "max_drift_c": cfg.max_temperature_drift_c or None,
                "defect_counts": dict(prov.get("defect_counts") or {}),  # type: ignore[call-overload]
                "counts_per_ugy": round(cal.counts_per_ugy, 3), "operator": prov.get("operator", ""),
                "offset_refreshed_at": cal.created_at.isoformat() if refreshed else None,
                "offset_refresh_every_h": cfg.offset_refresh_h or None}
        recovered = getattr(gw.detector, "recovered", None)
        replugs = getattr(gw.detector, "replugs", None)
        dropped = ctx.metrics.registry.get_sample_value("dxgate_frames_dropped_total")
        return {"detector": {"vendor": info.vendor, "model": info.model, "serial": info.serial,
                             "firmware": panel.firmware or info.firmware, "mode": gw.mode.name,
                             "state": panel.state, "exposure_state": gw.sequence.state.value,
                             "temperature_c": temperature, "over_temperature": panel.over_temperature,
                             "frames_held": panel.frames_held, "battery_percent": panel.battery_percent,
                             "link_quality_percent": panel.link_quality_percent, "error": panel.error},
                "calibration": calibration,
                "counters": {"frames_dropped": None if dropped is None else int(dropped),
                             "frames_recovered": None if recovered is None else len(recovered),
                             "replugs": replugs if isinstance(replugs, int) else None,
                             "kept_frames": len(gw.raw_store.pending())}}

    return r
