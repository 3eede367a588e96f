"""Store-and-forward: send what the spool holds to every destination, retrying as data.

Per destination, the due backlog goes over one association. A delivery is marked sent only
on a success or storage-warning status; a transient failure sets next_attempt_at with
exponential backoff and jitter; a permanent one quarantines it with the reason.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pynetdicom._validators import validate_ae
from pynetdicom.events import EventHandlerType

from gateway.alarms import Alarms
from gateway.config import DestinationConfig
from gateway.errors import DxgateError, ForwardError
from gateway.forward import scu
from gateway.forward.status import Outcome, Verdict, classify_status, classify_transport, describe
from gateway.spool import Delivery, DeliveryState, Spool

LOGGER = logging.getLogger(__name__)

NO_RESPONSE = ("no C-STORE response (association aborted, timed out or lost); "
               "outcome unknown, the same UID is resent")


@dataclass(frozen=True)
class DeliveryResult:
    uid: str
    destination: str
    outcome: Outcome
    status: int | None
    error: str | None


def check_destinations(destinations: Sequence[DestinationConfig]) -> None:
    """ForwardError naming the destination and the problem for anything pynetdicom would refuse
    later, in the middle of a pass (defence in depth: the configuration checks the same)."""
    names = [d.name for d in destinations]
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise ForwardError(f"destination names must be non-empty and unique, got {names}")
    for d in destinations:
        ok, why = validate_ae(d.called_ae)
        if not ok or not d.called_ae.strip():
            raise ForwardError(f"destination {d.name!r}: called AE title {d.called_ae!r}: {why or 'empty'}")
        if not d.host.strip():
            raise ForwardError(f"destination {d.name!r}: empty host")
        if not 0 < d.port < 65536:
            raise ForwardError(f"destination {d.name!r}: port {d.port} outside 1..65535")


class Forwarder:
    """Forwards due deliveries from a Spool; `forward_due` once, or `run` as a loop."""

    def __init__(self, spool: Spool, destinations: Sequence[DestinationConfig], *, calling_ae: str,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 backoff_base_s: float = 2.0, backoff_max_s: float = 300.0, batch_size: int = 1000,
                 extra_handlers: Sequence[EventHandlerType] = (), alarms: Alarms | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """`extra_handlers`: pynetdicom (event, handler) pairs bound on every association
        besides TCP_NODELAY (for metrics and tests)."""
        check_destinations(destinations)
        ok, why = validate_ae(calling_ae)
        if not ok or not calling_ae.strip():
            raise ForwardError(f"calling AE title {calling_ae!r}: {why or 'empty'}")
        if not 0 < backoff_base_s <= backoff_max_s:
            raise ForwardError(f"need 0 < backoff_base_s <= backoff_max_s, got {backoff_base_s}, {backoff_max_s}")
        if batch_size < 1:
            raise ForwardError(f"batch_size must be >= 1, got {batch_size}")
        self._spool = spool
        self._destinations = tuple(destinations)
        self._calling_ae = calling_ae
        self._clock = clock
        self._rng = rng or random.Random()
        self._base = backoff_base_s
        self._max = backoff_max_s
        self._batch = batch_size
        self._handlers = tuple(extra_handlers)
        self.loop_failures = 0  # passes of run() that failed (a metric; the loop goes on)
        self._dest_failures: dict[str, int] = {}  # consecutive association failures per destination
        self.alarms = alarms if alarms is not None else Alarms()
        self.on_result: Callable[[DeliveryResult], None] | None = None  # metrics hook
        self._monotonic = monotonic
        self._pass_started: float | None = None  # monotonic start of the pass in progress
        self.last_pass_completed: float | None = None  # monotonic end of the last completed pass

    @property
    def max_idle_s(self) -> float:
        """Longest the loop sleeps between passes."""
        return self._max

    def healthy(self, stuck_after_s: float | None = None) -> bool:
        """False while one pass has been running longer than `stuck_after_s` (default: three
        times the slowest destination's network timeout per association step, generously)."""
        started = self._pass_started
        if started is None:
            return True
        limit = stuck_after_s if stuck_after_s is not None else 10 * max(
            (d.timeout_s for d in self._destinations), default=30.0) + 60.0
        return self._monotonic() - started <= limit

    def reconfigure(self, destinations: Sequence[DestinationConfig]) -> None:
        """Serve a new list of destinations from the next pass on (SIGHUP)."""
        check_destinations(destinations)
        self._destinations = tuple(destinations)
        LOGGER.info("forwarder now serves %s", ", ".join(d.name for d in self._destinations))

    def forward_due(self, stop: threading.Event | None = None) -> list[DeliveryResult]:
        """Send every due delivery once; return what happened to each.

        With `stop`, returns between deliveries once it is set (what is unsent stays pending).
        """
        results: list[DeliveryResult] = []
        self._pass_started = self._monotonic()
        try:
            for dest in self._destinations:
                batch: list[Delivery] = []
                try:
                    while stop is None or not stop.is_set():
                        batch = self._spool.due(dest.name, self._clock(), self._batch)
                        if not batch:
                            break
                        done = self._forward_batch(dest, batch, stop)
                        results += done
                        if len(batch) < self._batch or any(r.outcome is Outcome.RETRY for r in done):
                            break
                except Exception as exc:  # one destination's failure must not stop the others
                    results += self._pass_failed(dest, batch, exc)
                    continue
                if any(r.destination == dest.name and r.outcome is Outcome.SENT for r in results):
                    if self.alarms.clear("forward-pass-failed", dest.name):
                        LOGGER.info("%s: forwarding works again", dest.name)
        finally:
            self._pass_started = None
            self.last_pass_completed = self._monotonic()
        return results

    def _pass_failed(self, dest: DestinationConfig, batch: list[Delivery], exc: Exception) -> list[DeliveryResult]:
        """Record an unexpected error on the deliveries it held up, back off, raise an alarm."""
        reason = f"forwarding failed unexpectedly: {type(exc).__name__}: {exc}"
        LOGGER.error("%s: %s", dest.name, reason, exc_info=not isinstance(exc, (DxgateError, sqlite3.Error, OSError)))
        self.alarms.raise_("forward-pass-failed", f"forwarding to {dest.name} failed: {type(exc).__name__}: {exc}; "
                           "the images wait and are retried", key=dest.name)
        self._dest_failures[dest.name] = self._dest_failures.get(dest.name, 0) + 1
        delay = self.backoff_delay(self._dest_failures[dest.name] - 1)
        out: list[DeliveryResult] = []
        for row in batch:
            try:
                if row.state is DeliveryState.PENDING and all(r.uid != row.sop_instance_uid for r in out):
                    out.append(self._settle(row, classify_transport(reason), None, delay=delay))
            except Exception as inner:  # e.g. the database itself failing: rows stay as they were
                LOGGER.error("%s: could not record the failure on %s: %s", dest.name, row.sop_instance_uid, inner)
        return out

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """Forward until `stop` is set; sleep until the next retry is due or `wake` is set.

        To stop promptly, set `stop` and then `wake`. Set `wake` after every put.
        """
        LOGGER.info("forwarder started for %s", ", ".join(d.name for d in self._destinations))
        failures = 0
        while not stop.is_set():
            wake.clear()
            try:
                self.forward_due(stop)
                failures = 0
                timeout = self._idle_timeout()
            except Exception as exc:
                # Nothing is lost (rows stay pending); the thread must not die, nor spin.
                failures += 1
                self.loop_failures += 1
                timeout = self.backoff_delay(failures)
                LOGGER.error("forwarder pass failed (%d in a row), retrying in %.0f s: %s: %s",
                             failures, timeout, type(exc).__name__, exc)
                self.alarms.raise_("forward-loop-failed", f"a forwarding pass failed ({type(exc).__name__}: "
                                   f"{exc}); retrying in {timeout:.0f} s")
            except BaseException as exc:
                LOGGER.critical("forwarder thread ends: %s", type(exc).__name__)
                raise
            else:
                self.alarms.clear("forward-loop-failed")
            wake.wait(timeout)
        LOGGER.info("forwarder stopped")

    def backoff_delay(self, attempts: int) -> float:
        """Exponential backoff with jitter: in [c/2, c], c = min(max, base * 2**attempts)."""
        ceiling = min(self._max, self._base * 2.0 ** min(attempts, 32))
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)

    # --- internals -------------------------------------------------------------------------

    def _idle_timeout(self) -> float:
        due = [t for t in (self._spool.next_attempt_at(d.name) for d in self._destinations) if t is not None]
        if not due:
            return self._max
        return min(self._max, max(0.0, min(due) - self._clock()))

    def _forward_batch(self, dest: DestinationConfig, batch: list[Delivery],
                       stop: threading.Event | None = None) -> list[DeliveryResult]:
        results: list[DeliveryResult] = []
        ready: list[tuple[Delivery, str]] = []
        for row in batch:
            try:
                ready.append((row, scu.transfer_syntax_of(row)))
            except scu.ObjectRefused as exc:
                results.append(self._settle(row, Verdict(Outcome.QUARANTINED, str(exc)), None))
        if not ready:
            return results
        contexts = scu.build_contexts((row.sop_class_uid, ts) for row, ts in ready)
        try:
            session = scu.open_session(dest, self._calling_ae, contexts, self._handlers)
        except scu.AssociationFailed as exc:
            # The destination failed, not the objects: one retry time for the whole backlog, so
            # a down PACS sees one connection attempt per backoff, and all of it goes on recovery.
            shared = None
            if exc.verdict.outcome is Outcome.RETRY:
                self._dest_failures[dest.name] = self._dest_failures.get(dest.name, 0) + 1
                shared = self.backoff_delay(self._dest_failures[dest.name] - 1)
            LOGGER.warning("%s: %s; %d deliveries wait", dest.name, exc.verdict.reason, len(ready))
            return results + [self._settle(row, exc.verdict, None, delay=shared) for row, _ in ready]
        self._dest_failures.pop(dest.name, None)
        try:
            for i, (row, ts) in enumerate(ready):
                if stop is not None and stop.is_set():
                    break  # shutting down: the rest stays pending, untouched
                if not session.established:
                    results += self._defer([r for r, _ in ready[i:]], "association lost before sending")
                    break
                verdict, status = self._send_one(session, row, ts)
                results.append(self._settle(row, verdict, status))
                if verdict.outcome is Outcome.RETRY:
                    rest = [r for r, _ in ready[i + 1:]]
                    results += self._defer(rest, f"deferred: {dest.name} failed transiently on an earlier object")
                    break
        finally:
            session.release()
        return results

    def _send_one(self, session: scu.Session, row: Delivery, transfer_syntax: str) -> tuple[Verdict, int | None]:
        try:
            scu.verify(row)
            reply = session.store(row, transfer_syntax)
        except scu.ObjectRefused as exc:
            return Verdict(Outcome.QUARANTINED, str(exc)), None
        if reply.status is None:
            return classify_transport(NO_RESPONSE), None
        return classify_status(reply.status), reply.status

    def _defer(self, rows: list[Delivery], reason: str) -> list[DeliveryResult]:
        return [self._settle(row, classify_transport(reason), None) for row in rows]

    def _settle(self, row: Delivery, verdict: Verdict, status: int | None,
                delay: float | None = None) -> DeliveryResult:
        now = self._clock()
        uid, dest = row.sop_instance_uid, row.destination
        if verdict.outcome is Outcome.SENT:
            self._spool.mark_sent(uid, dest, 0 if status is None else status, now)
            LOGGER.info("sent %s to %s: %s", uid, dest, describe(status or 0))
            result = DeliveryResult(uid, dest, Outcome.SENT, status, None)
        else:
            if verdict.outcome is Outcome.RETRY:
                at = now + (self.backoff_delay(row.attempts) if delay is None else delay)
                self._spool.mark_retry(uid, dest, status, verdict.reason, at, now)
                LOGGER.warning("retry %s to %s in %.1f s: %s", uid, dest, at - now, verdict.reason)
            else:
                self._spool.quarantine(uid, dest, status, verdict.reason, now)
            result = DeliveryResult(uid, dest, verdict.outcome, status, verdict.reason)
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # a metrics hook must never break forwarding
                LOGGER.exception("forwarding result hook failed")
        return result
