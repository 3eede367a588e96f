"""Backing a destination off: one retry time for its backlog, never pulled earlier."""

from __future__ import annotations

import random

from gateway.config import DestinationConfig
from gateway.forward.outcomes import Outcomes
from gateway.forward.status import Outcome
from gateway.spool import Spool
from tests.forward.conftest import FakeClock
from tests.spool.objects import make_object, put


def test_a_failed_early_attempt_does_not_pull_the_backlogs_retry_time_earlier(spool: Spool, clock: FakeClock) -> None:
    """At the backoff's cap, an operator's retry that fails again draws a delay shorter than
    what the backlog still had to wait: the backlog keeps its later time (no burst of attempts
    against an archive that is still down)."""
    objs = [make_object(seed=300 + i) for i in range(3)]
    for o in objs:
        put(spool, o, ("pacs",))
    late = clock() + 300.0
    spool.back_off("pacs", [], retry_at=late, error="down", now=clock())  # waiting at the cap
    clock.advance(1.0)
    outcomes = Outcomes(spool, clock=clock, rng=random.Random(1), backoff_base_s=1.0, backoff_max_s=300.0)
    [row] = [d for d in spool.deliveries(objs[0].sop_instance_uid)]
    results = outcomes.back_off(DestinationConfig(name="pacs"), [(row, None, "refused")], "still down")
    assert [r.outcome for r in results] == [Outcome.RETRY]
    backoff = spool.backoff("pacs")
    assert backoff is not None and backoff.retry_at == late and backoff.failures == 2
    assert {d.next_attempt_at for o in objs for d in spool.deliveries(o.sop_instance_uid)} == {late}
