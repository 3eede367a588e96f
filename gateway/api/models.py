"""Shared by the routes modules: the request-model base, worklist item and delivery JSON, errors as HTTP."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict

from gateway.errors import ExposureRefused, FrameKeptError
from gateway.spool import Delivery, DeliveryState
from gateway.types import WorklistItem


class ApiModel(BaseModel):
    """A request body: unknown fields and non-finite numbers refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def item_json(item: WorklistItem | None) -> dict[str, Any] | None:
    if item is None:
        return None
    d = asdict(item)
    d["patient_birth_date"] = item.patient_birth_date.isoformat() if item.patient_birth_date else None
    d["sps_start"] = item.sps_start.isoformat() if item.sps_start else None
    return d


def delivery_json(d: Delivery, now: float) -> dict[str, Any]:
    """A delivery as the console and `dxgate queue` show it; `held`: waiting for the
    technologist's verdict (pending, and its hold runs past `now`, the spool's clock)."""
    return {"sop_instance_uid": d.sop_instance_uid, "destination": d.destination, "state": d.state.value,
            "attempts": d.attempts, "next_attempt_at": d.next_attempt_at, "last_status": d.last_status,
            "last_error": d.last_error, "updated_at": d.updated_at, "size": d.size,
            "held_until": d.held_until,
            "held": d.state is DeliveryState.PENDING and d.held_until is not None and d.held_until > now}


def fail(exc: Exception) -> HTTPException:
    """The HTTP answer to a gateway error: 409 for a refused exposure, 500 for a kept frame, else 400."""
    if isinstance(exc, ExposureRefused):
        return HTTPException(409, detail=str(exc))
    if isinstance(exc, FrameKeptError):
        return HTTPException(500, detail=str(exc))
    return HTTPException(400, detail=str(exc))
