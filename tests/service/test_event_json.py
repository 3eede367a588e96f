"""Events reach the console as strict JSON, whatever numbers they carry."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from gateway.api.events_routes import event_json


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)  # as JSON.parse in a browser


def test_non_finite_numbers_become_null_at_any_depth() -> None:
    data = {"seq": 3, "ei": float("nan"), "di": float("inf"), "images": [{"ei": float("-inf"), "di": 1.5}],
            "pair": (float("nan"), 2)}
    assert _strict(event_json(data)) == {"seq": 3, "ei": None, "di": None, "images": [{"ei": None, "di": 1.5}],
                                         "pair": [None, 2]}


@pytest.mark.parametrize("value", [datetime(2026, 12, 1, tzinfo=UTC), b"x"])
def test_other_values_are_sent_as_their_text(value: object) -> None:
    assert _strict(event_json({"v": value})) == {"v": str(value)}
