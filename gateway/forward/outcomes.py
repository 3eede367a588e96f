"""What happened to a delivery, recorded in the spool: sent, quarantined, retried, or backed off."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import DestinationConfig
from gateway.forward.status import Outcome, Verdict, describe
from gateway.spool import Delivery, Spool

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryResult:
    uid: str
    destination: str
    outcome: Outcome
    status: int | None
    error: str | None
    warning: str | None = None  # SENT with a warning status: what the archive warned about


class Outcomes:
    """Records each delivery's outcome (one durable transaction) and draws the backoff times."""

    def __init__(self, spool: Spool, *, clock: Callable[[], float], rng: random.Random,
                 backoff_base_s: float, backoff_max_s: float) -> None:
        self._spool = spool
        self._clock = clock
        self._rng = rng
        self._rng_lock = threading.Lock()
        self._base = backoff_base_s
        self._max = backoff_max_s
        self.on_result: Callable[[DeliveryResult], None] | None = None  # metrics hook

    def backoff_delay(self, attempts: int) -> float:
        """Exponential backoff with jitter: in [c/2, c], c = min(max, base * 2**attempts)."""
        ceiling = min(self._max, self._base * 2.0 ** min(attempts, 32))
        with self._rng_lock:
            jitter = self._rng.uniform(0.0, ceiling / 2)
        return ceiling / 2 + jitter

    def back_off(self, dest: DestinationConfig, items: list[tuple[Delivery, int | None, str]],
                 reason: str) -> list[DeliveryResult]:
        """The destination failed: ONE retry time (read the clock once, draw the jitter once)
        for the attempted rows and the rest of its pending backlog, in one transaction."""
        now = self._clock()
        backoff = self._spool.backoff(dest.name)
        at = now + self.backoff_delay(backoff.failures if backoff else 0)
        if backoff is not None:
            at = max(at, backoff.retry_at)  # never pull the backlog's time earlier
        updated = set(self._spool.back_off(dest.name, [(row.sop_instance_uid, status, why)
                                                       for row, status, why in items], at, reason, now))
        LOGGER.warning("%s: %s; its backlog waits %.1f s", dest.name, reason, at - now)
        out = []
        for row, status, why in items:
            if row.sop_instance_uid in updated:
                out.append(self.report(DeliveryResult(row.sop_instance_uid, dest.name, Outcome.RETRY, status, why)))
        return out

    def settle(self, row: Delivery, verdict: Verdict, status: int | None) -> DeliveryResult:
        """Record the outcome of one delivery: sent, quarantined, or (this object only) retried."""
        now = self._clock()
        uid, dest = row.sop_instance_uid, row.destination
        if verdict.outcome is Outcome.SENT:
            warning = verdict.reason if verdict.warning else None
            self._spool.mark_sent(uid, dest, 0 if status is None else status, now, warning)
            if warning:
                LOGGER.warning("sent %s to %s, %s", uid, dest, warning)
            else:
                LOGGER.info("sent %s to %s: %s", uid, dest, describe(status or 0))
            result = DeliveryResult(uid, dest, Outcome.SENT, status, None, warning)
        else:
            if verdict.outcome is Outcome.RETRY:
                at = now + self.backoff_delay(row.attempts)
                self._spool.mark_retry(uid, dest, status, verdict.reason, at, now)
                LOGGER.warning("retry %s to %s in %.1f s: %s", uid, dest, at - now, verdict.reason)
            else:
                self._spool.quarantine(uid, dest, status, verdict.reason, now)
            result = DeliveryResult(uid, dest, verdict.outcome, status, verdict.reason)
        return self.report(result)

    def report(self, result: DeliveryResult) -> DeliveryResult:
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # a metrics hook must never break forwarding
                LOGGER.exception("forwarding result hook failed")
        return result
