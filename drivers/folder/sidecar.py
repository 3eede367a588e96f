"""The JSON sidecar vendor software writes next to each raw frame: geometry and exposure data.

One frame is two files with the same stem: ``<stem>.raw`` (rows x columns uint16,
little-endian, row-major) and ``<stem>.json``::

    {"rows": 1536, "columns": 1536, "bits_stored": 16, "pixel_spacing_mm": [0.278, 0.278],
     "kind": "exposed", "detector_serial": "V-123", "frame_number": 17,
     "acquired_at": "2026-12-01T10:00:00Z",
     "exposure": {"kvp": 70.2, "mas": 2.01, "exposure_time_ms": 10.1, "dap_dgy_cm2": 0.186}}

Unknown keys are refused (a vendor format change is noticed, not half-read).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

LOGGER = logging.getLogger(__name__)


class SidecarExposure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kvp: float = Field(gt=0, le=200)
    mas: float = Field(gt=0, le=2000)
    exposure_time_ms: float | None = Field(None, gt=0, le=100_000)
    dap_dgy_cm2: float | None = Field(None, ge=0, le=10_000)
    tube_current_ma: float | None = Field(None, gt=0, le=2000)


class Sidecar(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(ge=1, le=8192)
    columns: int = Field(ge=1, le=8192)
    bits_stored: int = Field(16, ge=8, le=16)
    pixel_spacing_mm: tuple[float, float] = Field(description="(row, column) spacing at the detector")
    kind: Literal["dark", "exposed"] = "exposed"
    detector_serial: str = Field("", max_length=64)
    frame_number: int = Field(0, ge=0)
    acquired_at: AwareDatetime | None = None
    temperature_c: float | None = Field(None, ge=-40, le=100)
    exposure: SidecarExposure | None = None

    @property
    def payload_bytes(self) -> int:
        return self.rows * self.columns * 2


def acquired_or(sidecar: Sidecar, fallback: datetime) -> datetime:
    return sidecar.acquired_at if sidecar.acquired_at is not None else fallback
