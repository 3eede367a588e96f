"""C-STORE outcomes classified per DESIGN.md invariant 3."""

from __future__ import annotations

import pytest

from gateway.forward.status import Outcome, classify_rejection, classify_status, describe


@pytest.mark.parametrize("status, outcome", [
    (0x0000, Outcome.SENT), (0xB000, Outcome.SENT), (0xB006, Outcome.SENT), (0xB007, Outcome.SENT),
    (0xA700, Outcome.RETRY), (0xA7FF, Outcome.RETRY),
    (0xA900, Outcome.QUARANTINED), (0xA9FF, Outcome.QUARANTINED),
    (0xC000, Outcome.QUARANTINED), (0xCFFF, Outcome.QUARANTINED),
    (0x0110, Outcome.QUARANTINED), (0x0122, Outcome.QUARANTINED), (0x0124, Outcome.QUARANTINED),
    (0x0001, Outcome.QUARANTINED), (0xB001, Outcome.QUARANTINED),
])
def test_status_classes(status: int, outcome: Outcome) -> None:
    verdict = classify_status(status)
    assert verdict.outcome is outcome
    assert f"0x{status:04X}" in verdict.reason


def test_rejections() -> None:
    assert classify_rejection(2, 1, 2).outcome is Outcome.RETRY
    assert classify_rejection(1, 1, 7).outcome is Outcome.QUARANTINED
    assert "permanent" in classify_rejection(1, 1, 7).reason


def test_describe_names_the_status() -> None:
    assert describe(0xA702) == "0xA702 (out of resources)"
    assert describe(0xC123) == "0xC123 (cannot understand)"
