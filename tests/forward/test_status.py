"""C-STORE outcomes classified per DESIGN.md invariant 3, by pynetdicom's status table."""

from __future__ import annotations

import pytest

from gateway.forward.status import Outcome, Scope, classify_rejection, classify_status, describe

# every Warning of PS3.4 B.2.3 / PS3.7 Annex C as pynetdicom classes them: the archive stored the object
WARNINGS = [0x0001, 0xB000, 0xB001, 0xB006, 0xB007, 0xB00F, 0x0107, 0x0116]


@pytest.mark.parametrize("status, outcome", [
    (0x0000, Outcome.SENT), *[(w, Outcome.SENT) for w in WARNINGS],
    (0xA700, Outcome.RETRY), (0xA7FF, Outcome.RETRY), (0x0213, Outcome.RETRY), (0xFE00, Outcome.RETRY),
    (0xA900, Outcome.QUARANTINED), (0xA9FF, Outcome.QUARANTINED),
    (0xC000, Outcome.QUARANTINED), (0xCFFF, Outcome.QUARANTINED),
    (0x0122, Outcome.QUARANTINED), (0x0124, Outcome.QUARANTINED), (0x0117, Outcome.QUARANTINED),
    (0xA801, Outcome.QUARANTINED),  # a failure no table names: still a failure
    (0xFF00, Outcome.QUARANTINED), (0xFF01, Outcome.QUARANTINED),  # pending is no final C-STORE answer
    (0x9999, Outcome.QUARANTINED), (0x0002, Outcome.QUARANTINED),  # unknown: treated as a failure
])
def test_status_classes(status: int, outcome: Outcome) -> None:
    verdict = classify_status(status)
    assert verdict.outcome is outcome
    assert f"0x{status:04X}" in verdict.reason
    assert verdict.warning is (status in WARNINGS)
    if outcome is Outcome.RETRY:
        assert verdict.scope is Scope.DESTINATION  # the archive, not the object: it backs off


def test_a_processing_failure_is_retried_once_for_that_object_then_quarantined() -> None:
    first = classify_status(0x0110, previous=None)
    assert (first.outcome, first.scope) == (Outcome.RETRY, Scope.OBJECT)
    assert classify_status(0x0110, previous=0xA700).outcome is Outcome.RETRY
    assert classify_status(0x0110, previous=0x0110).outcome is Outcome.QUARANTINED


def test_rejections() -> None:
    assert classify_rejection(2, 1, 2).outcome is Outcome.RETRY
    assert classify_rejection(1, 1, 7).outcome is Outcome.QUARANTINED
    assert "permanent" in classify_rejection(1, 1, 7).reason


def test_describe_names_the_status_from_pynetdicom() -> None:
    assert describe(0xA702) == "0xA702 (Failure: Refused: Out of Resources)"
    assert describe(0xC123) == "0xC123 (Failure: Cannot Understand)"
    assert describe(0xB001) == "0xB001 (Warning)"
    assert describe(0x0116) == "0x0116 (Warning: Attribute Value Out of Range)"
