"""The forwarding queue: deliveries listed (technologist), retried (engineer), released or purged (admin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from gateway.api.context import ApiContext, Require
from gateway.api.models import delivery_json, fail
from gateway.app import Gateway
from gateway.errors import DxgateError


def build_queue_router(ctx: ApiContext, require: Require) -> APIRouter:
    r = APIRouter()
    gw = ctx.gateway
    tech, engineer, admin = require("technologist"), require("engineer"), require("admin")

    @r.get("/api/queue", dependencies=[Depends(tech)])
    def queue(state: str | None = None, destination: str | None = None,
              limit: int = Query(100, ge=1, le=10000)) -> list[dict[str, Any]]:
        try:
            rows = gw.spool.listing(state=state, destination=destination, limit=limit)
            return [delivery_json(d, gw.spool.now()) for d in rows]
        except DxgateError as exc:
            raise fail(exc) from None

    @r.get("/api/queue/{uid}", dependencies=[Depends(tech)])
    def queue_show(uid: str) -> list[dict[str, Any]]:
        rows = gw.spool.deliveries(uid)
        if not rows:
            raise HTTPException(404, detail="no such instance in the queue")
        return [delivery_json(d, gw.spool.now()) for d in rows]

    @r.post("/api/queue/{uid}/retry", dependencies=[Depends(engineer)])
    def queue_retry(uid: str, destination: str | None = None) -> list[dict[str, Any]]:
        return each_delivery(gw, uid, destination, "pending", gw.spool.retry_now)

    @r.post("/api/queue/{uid}/release", dependencies=[Depends(admin)])
    def queue_release(uid: str, destination: str | None = None) -> list[dict[str, Any]]:
        return each_delivery(gw, uid, destination, "quarantined", gw.spool.release)

    @r.post("/api/queue/{uid}/purge", dependencies=[Depends(admin)])
    def queue_purge(uid: str, reason: str = Query(min_length=1, max_length=200),
                    destination: str | None = None) -> list[dict[str, Any]]:
        """Give up the quarantined deliveries of an instance for good (the file stays)."""
        return each_delivery(gw, uid, destination, "quarantined",
                             lambda u, d: gw.spool.purge(u, d, reason))

    return r


def each_delivery(gw: Gateway, uid: str, destination: str | None, state: str,
                  act: Callable[[str, str], None]) -> list[dict[str, Any]]:
    """Act on each of the instance's deliveries in `state` (to `destination` if given), wake the
    forwarder and return all its deliveries; 404 when none is in that state."""
    rows = [d for d in gw.spool.deliveries(uid) if d.state.value == state
            and (destination is None or d.destination == destination)]
    if not rows:
        raise HTTPException(404, detail=f"no {state} delivery of that instance"
                                        + (f" to {destination}" if destination else ""))
    for d in rows:
        act(uid, d.destination)
    gw.wake_forwarder()
    return [delivery_json(d, gw.spool.now()) for d in gw.spool.deliveries(uid)]
