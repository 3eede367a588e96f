"""Store-and-forward: send what the spool holds to every destination, retrying as data.

Each destination has its own worker thread (`run`), so an archive that hangs delays only
its own backlog. Per destination, the due backlog goes over up to `associations` associations
at once (gateway.forward.pdata sends each file straight from disk), each taking the next image
from the shared batch, so every image goes over exactly one. A delivery is
marked sent on a success or warning status (the warning recorded); a permanent failure
quarantines it with the reason.

Backoff belongs to the destination, not to an image (DESIGN.md): when the destination fails
(no association, out of resources, an abort, a timeout), its whole pending backlog gets ONE
retry time, computed once, exponential with jitter in the number of consecutive failures;
images spooled meanwhile join it (the spool gives their rows that time); and the first
answer from the archive ends the backoff and makes all of the backlog due at once, sent in
the same pass. Everything is in the state database, so a restart or the CLI sees it.

This module holds the passes; the threads are in `workers`, a batch's sending in `sending`,
the recording of outcomes and the backoff times in `outcomes`.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

from pynetdicom._validators import validate_ae
from pynetdicom.events import EventHandlerType

from gateway.alarms import Alarms
from gateway.audit import messages as audit_msg
from gateway.config import DestinationConfig
from gateway.errors import DxgateError, ForwardError
from gateway.forward import commitment, scu
from gateway.forward.outcomes import DeliveryResult, Outcomes
from gateway.forward.sending import BatchSender
from gateway.forward.status import Outcome
from gateway.forward.tls_failures import TlsFailures
from gateway.forward.workers import Worker, Workers
from gateway.spool import Delivery, RetentionPolicy, Spool

LOGGER = logging.getLogger(__name__)

__all__ = ["DeliveryResult", "Forwarder", "check_destinations"]


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
    """Forwards due deliveries from a Spool: `forward_due` once (every destination in turn),
    or `run`, a worker thread per destination."""

    def __init__(self, spool: Spool, destinations: Sequence[DestinationConfig], *, calling_ae: str,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 backoff_base_s: float = 2.0, backoff_max_s: float = 300.0, batch_size: int = 1000,
                 extra_handlers: Sequence[EventHandlerType] = (), alarms: Alarms | None = None,
                 monotonic: Callable[[], float] = time.monotonic, stop_grace_s: float = 2.0,
                 audit: Callable[[audit_msg.AuditEvent], object] | None = None) -> None:
        """`audit` records security events (a failed TLS handshake). `extra_handlers`: pynetdicom
        (event, handler) pairs bound on every association besides TCP_NODELAY (for metrics and
        tests). `stop_grace_s`: at shutdown, how long a
        worker may finish the C-STORE in flight before its association is cut; `run` returns
        at most about a second after that, even if an archive hangs."""
        check_destinations(destinations)
        ok, why = validate_ae(calling_ae)
        if not ok or not calling_ae.strip():
            raise ForwardError(f"calling AE title {calling_ae!r}: {why or 'empty'}")
        if not 0 < backoff_base_s <= backoff_max_s:
            raise ForwardError(f"need 0 < backoff_base_s <= backoff_max_s, got {backoff_base_s}, {backoff_max_s}")
        if batch_size < 1:
            raise ForwardError(f"batch_size must be >= 1, got {batch_size}")
        if not stop_grace_s >= 0:
            raise ForwardError(f"stop_grace_s must be >= 0, got {stop_grace_s}")
        self._spool = spool
        self._destinations = tuple(destinations)
        self._calling_ae = calling_ae
        self._clock = clock
        self._max = backoff_max_s
        self._outcomes = Outcomes(spool, clock=clock, rng=rng or random.Random(), backoff_base_s=backoff_base_s,
                                  backoff_max_s=backoff_max_s)
        self._batch = batch_size
        self._handlers = tuple(extra_handlers)
        self.loop_failures = 0  # worker passes that failed outright (a metric; the worker goes on)
        self.alarms = alarms if alarms is not None else Alarms()
        self._monotonic = monotonic
        self._passes: dict[str, float] = {}  # destination -> monotonic start of its pass in progress
        self.last_pass_completed: float | None = None  # monotonic end of the last completed pass
        self._workers = Workers(self._work, stop_grace_s=stop_grace_s)  # threads only while `run` runs
        self._running = False
        self._run_wake: threading.Event | None = None
        self.committer = commitment.Committer(spool, calling_ae=calling_ae, clock=clock, alarms=self.alarms,
                                              extra_handlers=self._handlers, batch_size=batch_size)
        self.committer.wake = self.wake_destination
        self.committer.on_quarantine = self._commitment_quarantined
        spool.unsend()  # rows left 'sending' by a run that ended mid-association: pending again
        self.committer.resume()
        self.removed_files = 0  # spool files deleted by retention (a metric)
        self.audit = audit
        tls = TlsFailures(self.alarms, calling_ae=calling_ae, audit=lambda: self.audit)
        self._sender = BatchSender(spool, calling_ae=calling_ae, clock=clock, handlers=self._handlers,
                                   committer=self.committer, outcomes=self._outcomes, tls=tls)

    @property
    def on_result(self) -> Callable[[DeliveryResult], None] | None:
        """Called with every delivery's result (metrics); its exceptions are logged, never raised."""
        return self._outcomes.on_result

    @on_result.setter
    def on_result(self, hook: Callable[[DeliveryResult], None] | None) -> None:
        self._outcomes.on_result = hook

    @property
    def max_idle_s(self) -> float:
        """Longest a worker sleeps between passes."""
        return self._max

    def healthy(self, stuck_after_s: float | None = None) -> bool:
        """False while a destination's pass has been running longer than `stuck_after_s`
        (default: ten times the slowest destination's network timeout, plus a minute), or
        when a destination's worker thread has died while `run` runs."""
        limit = stuck_after_s if stuck_after_s is not None else 10 * max(
            (d.timeout_s for d in self._destinations), default=30.0) + 60.0
        now = self._monotonic()
        if any(now - started > limit for started in list(self._passes.values())):
            return False
        if self._running:
            return self._workers.alive()
        return True

    def reconfigure(self, destinations: Sequence[DestinationConfig]) -> None:
        """Serve a new list of destinations from the next pass on (SIGHUP); under `run`, a
        destination that came gets a worker and one that left loses its own."""
        check_destinations(destinations)
        self._destinations = tuple(destinations)
        LOGGER.info("forwarder now serves %s", ", ".join(d.name for d in self._destinations))
        if self._run_wake is not None:
            self._run_wake.set()

    def forward_due(self, stop: threading.Event | None = None) -> list[DeliveryResult]:
        """Send every due delivery once, one destination after the other; return what
        happened to each.

        With `stop`, returns between deliveries once it is set (what is unsent stays pending).
        """
        results: list[DeliveryResult] = []
        for dest in self._destinations:
            if stop is not None and stop.is_set():
                break
            results += self._forward_destination(dest, stop)[0]
        return results

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """Forward until `stop` is set: a worker thread per destination, each sleeping until its
        next retry is due or `wake` is set (wake is handed on to all of them).

        To stop promptly, set `stop` and then `wake`. Set `wake` after every put. Returns at most
        `stop_grace_s` plus about a second after `stop` is seen, whatever an archive does."""
        LOGGER.info("forwarder started for %s", ", ".join(d.name for d in self._destinations))
        self._run_wake = wake
        self._running = True
        try:
            while not stop.is_set():
                wake.clear()
                self._workers.reconcile({d.name for d in self._destinations})
                self._workers.wake_all()
                wake.wait(self._max)
        finally:
            self._running = False
            self._run_wake = None
            self._workers.stop(self.committer.interrupt)
        LOGGER.info("forwarder stopped")

    def wake_destination(self, name: str) -> None:
        """Run a destination's pass now (a commitment report asked for a resend)."""
        self._workers.wake(name)

    def retention_policy(self) -> RetentionPolicy:
        """The configured destinations: which commit, how long the others keep a sent file."""
        return RetentionPolicy(commits=frozenset(d.name for d in self._destinations if d.commitment),
                               age_s={d.name: d.retention_s for d in self._destinations if not d.commitment})

    def retain(self) -> list[str]:
        """Delete the spool files every destination is done with (never to make room)."""
        removed = self._spool.retain(self.retention_policy(), self._clock())
        self.removed_files += len(removed)
        return removed

    def _commitment_quarantined(self, uid: str, destination: str, reason: str) -> None:
        self._outcomes.report(DeliveryResult(uid, destination, Outcome.QUARANTINED, None, reason))

    def backoff_delay(self, attempts: int) -> float:
        """Exponential backoff with jitter: in [c/2, c], c = min(max, base * 2**attempts)."""
        return self._outcomes.backoff_delay(attempts)

    # --- a destination's worker ------------------------------------------------------------

    def _destination(self, name: str) -> DestinationConfig | None:
        return next((d for d in self._destinations if d.name == name), None)

    def _work(self, worker: Worker) -> None:
        """A destination's loop: a pass, then sleep until its next due time or a wake."""
        failures = 0
        while not worker.stop.is_set():
            worker.wake.clear()
            dest = self._destination(worker.name)
            if dest is None:
                return
            try:
                _, failed = self._forward_destination(dest, worker.stop, worker.attempt)
                if worker.stop.is_set():
                    return  # the spool may be closing: touch it no more
                timeout = self._idle_timeout(dest)
                failures = failures + 1 if failed else 0
                if failed:  # never spin on an error the queue could not record
                    timeout = max(timeout, self.backoff_delay(failures - 1))
            except Exception as exc:
                # Nothing is lost (rows stay pending); the worker must not die, nor spin.
                failures += 1
                self.loop_failures += 1
                timeout = self.backoff_delay(failures)
                LOGGER.error("%s: forwarding pass failed (%d in a row), retrying in %.0f s: %s: %s",
                             dest.name, failures, timeout, type(exc).__name__, exc)
                self.alarms.raise_("forward-loop-failed", f"a forwarding pass to {dest.name} failed "
                                   f"({type(exc).__name__}: {exc}); retrying in {timeout:.0f} s", key=dest.name)
            except BaseException as exc:
                LOGGER.critical("%s: forwarding worker ends: %s", dest.name, type(exc).__name__)
                raise
            else:
                self.alarms.clear("forward-loop-failed", dest.name)
            worker.wake.wait(timeout)

    def _idle_timeout(self, dest: DestinationConfig) -> float:
        due = min((t for t in (self._spool.next_attempt_at(dest.name), self.committer.next_due(dest))
                   if t is not None), default=None)
        if due is None:
            return self._max
        return min(self._max, max(0.0, due - self._clock()))

    # --- one destination's pass ------------------------------------------------------------

    def _forward_destination(self, dest: DestinationConfig, stop: threading.Event | None,
                             attempt: scu.Attempt | None = None) -> tuple[list[DeliveryResult], bool]:
        """Send the destination's due backlog, batch after batch, until none is due, the
        destination fails or `stop` is set. Returns the results, and whether the pass failed
        unexpectedly."""
        results: list[DeliveryResult] = []
        batch: list[Delivery] = []
        failed = False
        self._passes[dest.name] = self._monotonic()
        try:
            while stop is None or not stop.is_set():
                batch = self._spool.due(dest.name, self._clock(), self._batch)
                if not batch:
                    break
                done, go_on = self._sender.send_batch(dest, batch, stop, attempt)
                results += done
                if not go_on:
                    break
            if stop is None or not stop.is_set():
                self._commit_and_retain(dest, stop, attempt)
        except Exception as exc:  # one destination's failure must not stop the others
            failed = True
            results += self._pass_failed(dest, batch, exc)
        else:
            if any(r.outcome is Outcome.SENT for r in results):
                if self.alarms.clear("forward-pass-failed", dest.name):
                    LOGGER.info("%s: forwarding works again", dest.name)
        finally:
            self._passes.pop(dest.name, None)
            self.last_pass_completed = self._monotonic()
        return results, failed

    def _commit_and_retain(self, dest: DestinationConfig, stop: threading.Event | None,
                           attempt: scu.Attempt | None) -> None:
        """Commitment requests due and the retention sweep: their failure is alarmed, never
        blamed on the destination's deliveries (no backoff)."""
        try:
            self.committer.ask_due(dest, stop, attempt)
            self.retain()
        except Exception as exc:
            LOGGER.error("%s: storage commitment or retention failed: %s: %s", dest.name, type(exc).__name__, exc)
            self.alarms.raise_("commitment-pass-failed", f"storage commitment or retention for {dest.name} failed "
                               f"({type(exc).__name__}: {exc}); files are kept, retried at the next pass",
                               key=dest.name)
        else:
            self.alarms.clear("commitment-pass-failed", dest.name)

    def _pass_failed(self, dest: DestinationConfig, batch: list[Delivery], exc: Exception) -> list[DeliveryResult]:
        """Record an unexpected error on the deliveries it held up, back off, raise an alarm."""
        reason = f"forwarding failed unexpectedly: {type(exc).__name__}: {exc}"
        LOGGER.error("%s: %s", dest.name, reason, exc_info=not isinstance(exc, (DxgateError, sqlite3.Error, OSError)))
        self.alarms.raise_("forward-pass-failed", f"forwarding to {dest.name} failed: {type(exc).__name__}: {exc}; "
                           "the images wait and are retried", key=dest.name)
        try:
            return self._outcomes.back_off(dest, [(row, None, reason) for row in batch], reason)
        except Exception as inner:  # e.g. the database itself failing: rows stay as they were
            LOGGER.error("%s: could not record the failure: %s", dest.name, inner)
            return []
