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
                    data = json.dumps({"seq": event.seq, "at": event.at, **event.data}, default=_finite)
                    yield f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()
                    last = time.monotonic()
            finally:
                sub.close()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    return r


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
