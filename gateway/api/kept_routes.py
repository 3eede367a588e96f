"""Raw frames kept after a failed processing, for engineers: list them and process them again."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends

from gateway.api.context import ApiContext, Require


def build_kept_router(ctx: ApiContext, require: Require) -> APIRouter:
    r = APIRouter()
    gw = ctx.gateway
    engineer = require("engineer")

    @r.get("/api/kept", dependencies=[Depends(engineer)])
    def kept() -> list[dict[str, Any]]:
        return [{"kept_id": k.kept_id, "frame_number": k.frame_number, "kept_at": k.kept_at, "reason": k.reason}
                for k in gw.raw_store.pending()]

    @r.post("/api/kept/reprocess", dependencies=[Depends(engineer)])
    def reprocess() -> list[dict[str, Any]]:
        return [asdict(res) for res in gw.reprocess()]

    return r
