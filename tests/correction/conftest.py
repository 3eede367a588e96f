"""Frames from the simulated panel, made directly from its physics model (no driver)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from gateway.correction import CalibrationSet, calibrate
from gateway.types import FrameKind, FrameMeta, RawFrame
from hw_sim.detector_model import BITS_STORED, DetectorModel

CAL_TIME = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
FLAT_KERMA_UGY = 10.0


@dataclass
class Panel:
    """A simulated panel that hands out RawFrames with consistent metadata."""

    model: DetectorModel
    serial: str = "SIM-0001"
    _numbers: itertools.count = field(default_factory=lambda: itertools.count(1))

    def frame(self, kerma_ugy: float = 0.0, scene: str = "open", *, kind: FrameKind | None = None,
              serial: str | None = None, mode: str | None = None) -> RawFrame:
        pixels = self.model.frame(kerma_ugy, scene)
        n = next(self._numbers)
        meta = FrameMeta(
            frame_number=n, detector_serial=serial or self.serial, mode=mode or self.model.mode,
            rows=self.model.rows, columns=self.model.columns, bits_stored=BITS_STORED,
            kind=kind or (FrameKind.EXPOSED if kerma_ugy > 0 else FrameKind.DARK),
            temperature_c=self.model.temperature_c, acquired_at=CAL_TIME + timedelta(seconds=n), crc32=0)
        return RawFrame(pixels=pixels, meta=meta)

    def darks(self, n: int) -> list[RawFrame]:
        return [self.frame() for _ in range(n)]

    def flats(self, n: int, kerma_ugy: float = FLAT_KERMA_UGY) -> list[RawFrame]:
        return [self.frame(kerma_ugy) for _ in range(n)]

    def calibrate(self, n_darks: int = 16, n_flats: int = 8) -> CalibrationSet:
        """Darks, flats, then one dark right after the last flat (it shows the lag)."""
        darks, flats = self.darks(n_darks), self.flats(n_flats)
        return calibrate(darks, flats, lag_darks=self.darks(1), flat_kerma_ugy=FLAT_KERMA_UGY,
                         operator="test engineer", now=CAL_TIME)


@pytest.fixture
def make_panel() -> Callable[..., Panel]:
    def make(mode: str = "8x8", seed: int = 1, serial: str = "SIM-0001", **kw: float) -> Panel:
        return Panel(DetectorModel(mode, seed, **kw), serial=serial)

    return make


@pytest.fixture(scope="module")
def panel4() -> Panel:
    """A 768x768 panel, shared by a module's tests (frames keep flowing from its noise stream)."""
    return Panel(DetectorModel("4x4", seed=7))


@pytest.fixture(scope="module")
def cal4(panel4: Panel) -> CalibrationSet:
    return panel4.calibrate()
