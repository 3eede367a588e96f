"""How a delivery reads in the console and `dxgate queue`: held for review, or not."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.api.models import delivery_json
from gateway.spool import Delivery, DeliveryState

ROW = Delivery(sop_instance_uid="1.2.3", destination="pacs", state=DeliveryState.PENDING, attempts=0,
               next_attempt_at=1600.0, last_status=None, last_error=None, updated_at=1000.0, sop_class_uid="1.2",
               path="/x.dcm", sha256="0" * 64, size=10, held_until=1600.0)


@pytest.mark.parametrize("now, state, held_until, held", [
    (1000.0, DeliveryState.PENDING, 1600.0, True),  # waiting for the verdict
    (1600.0, DeliveryState.PENDING, 1600.0, False),  # the hold ran out: it leaves as accepted
    (1000.0, DeliveryState.PENDING, None, False),  # accepted (released), or never held
    (1000.0, DeliveryState.WITHHELD, 1600.0, False),  # rejected: withheld, not held
])
def test_held_only_while_pending_and_the_hold_runs(now: float, state: DeliveryState, held_until: float | None,
                                                   held: bool) -> None:
    shown = delivery_json(dataclasses.replace(ROW, state=state, held_until=held_until), now)
    assert shown["held"] is held and shown["held_until"] == held_until and shown["state"] == state.value
