"""The audit trail for admins, read through the query the daemon gives (404 when it keeps none)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from gateway.api.context import ApiContext, Require


def build_audit_router(ctx: ApiContext, require: Require) -> APIRouter:
    r = APIRouter()
    admin = require("admin")

    @r.get("/api/audit", dependencies=[Depends(admin)])
    def audit(since: float | None = None, limit: int = Query(200, ge=1, le=10000)) -> list[dict[str, Any]]:
        if ctx.audit_query is None:
            raise HTTPException(404, detail="no audit trail configured")
        return ctx.audit_query(since=since, limit=limit)

    return r
