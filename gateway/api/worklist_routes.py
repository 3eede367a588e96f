"""The worklist as technologists see it: the cached or queried view, searched, and a refresh from the RIS."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from gateway.api.context import ApiContext, Require
from gateway.api.models import item_json
from gateway.errors import DxgateError


def build_worklist_router(ctx: ApiContext, require: Require) -> APIRouter:
    r = APIRouter()
    gw = ctx.gateway
    tech = require("technologist")

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
                "items": [item_json(i) for i in items]}

    @r.post("/api/worklist/refresh", dependencies=[Depends(tech)])
    def worklist_refresh() -> dict[str, Any]:
        try:
            view = gw.worklist()
        except DxgateError as exc:
            raise HTTPException(502, detail=str(exc)) from None
        return {"source": view.source, "items": len(view.items)}

    return r
