"""The console's steps through a Gateway, for the review tests: an injected clock, an exam
armed on a chest view, and an exposure by the (simulated) hand switch."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.app import Gateway
from gateway.exam_workflow import AcquiredImage, ExamWorkflow
from gateway.types import Anatomy, Technique


class Clock:
    """The gateway's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def armed(gw: Gateway) -> ExamWorkflow:
    """The console's path: exam opened, view chosen, release armed."""
    ex = gw.exams
    ex.start(None)
    ex.choose_view(Anatomy("CHEST", "PA", None), Technique(kvp=80.0, mas=1.2), 400.0)
    ex.arm(True)
    return ex


def expose(ex: ExamWorkflow) -> AcquiredImage:
    image = ex.expose_chosen()
    assert image is not None
    return image
