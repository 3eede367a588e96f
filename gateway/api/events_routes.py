"""The event stream the console listens to: server-sent events, with a keep-alive comment when quiet."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from gateway.api.context import ApiContext, Require


def build_events_router(ctx: ApiContext, require: Require) -> APIRouter:
    r = APIRouter()
    tech = require("technologist")

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
                    data = event_json({"seq": event.seq, "at": event.at, **event.data})
                    yield f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()
                    last = time.monotonic()
            finally:
                sub.close()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    return r


def event_json(data: dict[str, Any]) -> str:
    """An event as strict JSON (what a browser's JSON.parse takes): a NaN or an infinity (an
    exposure index that could not be computed, say) becomes null, anything else not JSON its text."""
    return json.dumps(_finite(data), default=str, allow_nan=False)


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x
