"""States of one exposure and the transitions allowed between them."""

from __future__ import annotations

import enum

from gateway.errors import DxgateError


class ExposureState(enum.Enum):
    IDLE = "idle"
    PREPARING = "preparing"  # technique sent, tube preparing
    READY = "ready"  # generator ready, detector armed
    EXPOSING = "exposing"
    READOUT = "readout"
    DONE = "done"
    FAILED = "failed"


class IllegalTransition(DxgateError):
    """A step was asked for out of order (e.g. expose before ready)."""


_ALLOWED: dict[ExposureState, frozenset[ExposureState]] = {
    ExposureState.IDLE: frozenset({ExposureState.PREPARING, ExposureState.READOUT}),  # READOUT: dark frames
    ExposureState.PREPARING: frozenset({ExposureState.READY, ExposureState.FAILED}),
    # READY -> IDLE: the hand switch's release withdrawn before any X-rays
    ExposureState.READY: frozenset({ExposureState.EXPOSING, ExposureState.FAILED, ExposureState.IDLE}),
    ExposureState.EXPOSING: frozenset({ExposureState.READOUT, ExposureState.FAILED}),
    ExposureState.READOUT: frozenset({ExposureState.DONE, ExposureState.FAILED}),
    ExposureState.DONE: frozenset({ExposureState.IDLE}),
    ExposureState.FAILED: frozenset({ExposureState.IDLE}),
}


def check_transition(current: ExposureState, new: ExposureState) -> None:
    if new not in _ALLOWED[current]:
        raise IllegalTransition(f"exposure cannot go from {current.value} to {new.value}")
