"""The operator API, assembled from one routes module per area, in the order they are matched."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter

from gateway.api.audit_routes import build_audit_router
from gateway.api.calibration_routes import build_calibration_router
from gateway.api.context import ApiContext, Require
from gateway.api.events_routes import build_events_router
from gateway.api.exam_routes import build_exam_router
from gateway.api.kept_routes import build_kept_router
from gateway.api.queue_routes import build_queue_router
from gateway.api.status_routes import build_status_router
from gateway.api.worklist_routes import build_worklist_router

# Technologists: status, worklist, the exam. Engineers: calibration, the software trigger, queue
# retry, kept frames. Admins: quarantine release, the audit trail. Every state-changing route is a
# POST (CSRF-checked by the auth layer). Responses may carry patient data; log lines never do.
AREAS: tuple[Callable[[ApiContext, Require], APIRouter], ...] = (
    build_status_router, build_worklist_router, build_exam_router, build_calibration_router,
    build_kept_router, build_queue_router, build_audit_router, build_events_router)


def build_router(ctx: ApiContext, require: Require) -> APIRouter:
    r = APIRouter()
    for build in AREAS:
        r.include_router(build(ctx, require))
    return r
