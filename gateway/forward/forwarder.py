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
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pynetdicom._validators import validate_ae
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext

from gateway.alarms import Alarms
from gateway.audit import messages as audit_msg
from gateway.config import DestinationConfig
from gateway.errors import DxgateError, ForwardError
from gateway.forward import commitment, scu
from gateway.forward.status import Outcome, Scope, Verdict, classify_status, classify_transport, describe
from gateway.spool import Delivery, RetentionPolicy, Spool

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
    warning: str | None = None  # SENT with a warning status: what the archive warned about


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


@dataclass
class _Worker:
    """One destination's thread: its own wake and stop, and the association it has open."""

    name: str
    wake: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    attempt: scu.Attempt = field(default_factory=scu.Attempt)
    thread: threading.Thread | None = None


class _Backlog:
    """A batch shared by a destination's parallel associations: each image is taken once."""

    def __init__(self, rows: Sequence[tuple[Delivery, str]]) -> None:
        self._lock = threading.Lock()
        self._rows = deque(rows)
        self.results: list[DeliveryResult] = []
        self.go_on = True
        self.error: Exception | None = None
        self._answered = False

    @property
    def empty(self) -> bool:
        with self._lock:
            return not self._rows

    def take(self) -> tuple[Delivery, str] | None:
        with self._lock:
            return self._rows.popleft() if self._rows else None

    def drain(self) -> list[tuple[Delivery, str]]:
        """Take everything left (the destination failed: it all backs off)."""
        with self._lock:
            rest = list(self._rows)
            self._rows.clear()
            return rest

    def add(self, result: DeliveryResult) -> None:
        with self._lock:
            self.results.append(result)

    def fail(self, results: list[DeliveryResult]) -> None:
        with self._lock:
            self.results += results
            self.go_on = False

    def first_answer(self) -> bool:
        """True once: for the first image the archive answered."""
        with self._lock:
            first, self._answered = not self._answered, True
            return first


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
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._base = backoff_base_s
        self._max = backoff_max_s
        self._batch = batch_size
        self._handlers = tuple(extra_handlers)
        self._grace = stop_grace_s
        self.loop_failures = 0  # worker passes that failed outright (a metric; the worker goes on)
        self.alarms = alarms if alarms is not None else Alarms()
        self.on_result: Callable[[DeliveryResult], None] | None = None  # metrics hook
        self._monotonic = monotonic
        self._passes: dict[str, float] = {}  # destination -> monotonic start of its pass in progress
        self.last_pass_completed: float | None = None  # monotonic end of the last completed pass
        self._workers: dict[str, _Worker] = {}  # while `run` runs
        self._retired: list[_Worker] = []  # workers of destinations that left, finishing their pass
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
        self._tls_failing: set[str] = set()  # destinations whose last TLS handshake failed (audited once)

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
            return all(w.thread is not None and w.thread.is_alive() for w in list(self._workers.values()))
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
                self._reconcile()
                for worker in list(self._workers.values()):
                    worker.wake.set()
                wake.wait(self._max)
        finally:
            self._running = False
            self._run_wake = None
            self._stop_workers()
        LOGGER.info("forwarder stopped")

    def wake_destination(self, name: str) -> None:
        """Run a destination's pass now (a commitment report asked for a resend)."""
        worker = self._workers.get(name)
        if worker is not None:
            worker.wake.set()

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
        self._report(DeliveryResult(uid, destination, Outcome.QUARANTINED, None, reason))

    def backoff_delay(self, attempts: int) -> float:
        """Exponential backoff with jitter: in [c/2, c], c = min(max, base * 2**attempts)."""
        ceiling = min(self._max, self._base * 2.0 ** min(attempts, 32))
        with self._rng_lock:
            jitter = self._rng.uniform(0.0, ceiling / 2)
        return ceiling / 2 + jitter

    # --- workers ---------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """One worker per configured destination: start missing ones (again, if one died),
        retire those of destinations that left."""
        wanted = {d.name for d in self._destinations}
        for name in list(self._workers):
            worker = self._workers[name]
            if name not in wanted:
                worker.stop.set()
                worker.wake.set()
                self._retired.append(self._workers.pop(name))
                LOGGER.info("%s: no longer a destination; its worker ends", name)
            elif worker.thread is not None and not worker.thread.is_alive():
                LOGGER.error("%s: forwarding worker died; starting a new one", name)
                del self._workers[name]
        self._retired = [w for w in self._retired if w.thread is not None and w.thread.is_alive()]
        for name in sorted(wanted - self._workers.keys()):
            worker = _Worker(name)
            worker.thread = threading.Thread(target=self._work, args=(worker,), name=f"dxgate-forward-{name}",
                                             daemon=True)
            self._workers[name] = worker
            worker.thread.start()

    def _stop_workers(self) -> None:
        """Stop every worker: let each finish what is in flight for the grace time, then cut
        its association (an archive that never answers) and wait a little more."""
        workers = list(self._workers.values()) + self._retired
        for w in workers:
            w.stop.set()
            w.wake.set()
        self.committer.interrupt()  # a worker holding its association for a report lets go
        deadline = self._grace_clock() + self._grace
        for w in workers:
            if w.thread is not None:
                w.thread.join(max(0.0, deadline - self._grace_clock()))
        busy = [w for w in workers if w.thread is not None and w.thread.is_alive()]
        for w in busy:
            LOGGER.warning("%s: still busy %.1f s after stop; cutting its association", w.name, self._grace)
            w.attempt.cancel()
        deadline = self._grace_clock() + 1.0
        for w in busy:
            if w.thread is not None:
                w.thread.join(max(0.0, deadline - self._grace_clock()))
            if w.thread is not None and w.thread.is_alive():
                LOGGER.error("%s: forwarding worker did not end; left behind (it records nothing more)", w.name)
        self._workers.clear()
        self._retired.clear()

    @staticmethod
    def _grace_clock() -> float:
        return time.monotonic()  # real time: shutdown bounds are real, whatever clock is injected

    def _destination(self, name: str) -> DestinationConfig | None:
        return next((d for d in self._destinations if d.name == name), None)

    def _work(self, worker: _Worker) -> None:
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
                done, go_on = self._forward_batch(dest, batch, stop, attempt)
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
            return self._back_off(dest, [(row, None, reason) for row in batch], reason)
        except Exception as inner:  # e.g. the database itself failing: rows stay as they were
            LOGGER.error("%s: could not record the failure: %s", dest.name, inner)
            return []

    def _forward_batch(self, dest: DestinationConfig, batch: list[Delivery], stop: threading.Event | None,
                       attempt: scu.Attempt | None) -> tuple[list[DeliveryResult], bool]:
        """A batch over the destination's associations: one is opened first (a down archive
        sees one attempt), then up to `associations - 1` more, each taking the next image from
        the shared backlog, so every image goes over exactly one. Returns the results, and
        whether the pass may go on (False once the destination failed or `stop` is set)."""
        results: list[DeliveryResult] = []
        ready: list[tuple[Delivery, str]] = []
        for row in batch:
            try:
                ready.append((row, scu.transfer_syntax_of(row)))
            except scu.ObjectRefused as exc:
                results.append(self._settle(row, Verdict(Outcome.QUARANTINED, str(exc)), None))
        if not ready:
            return results, True
        contexts = scu.build_contexts(((row.sop_class_uid, ts) for row, ts in ready), scu.wanted_syntax(dest))
        handlers = list(self._handlers)
        if dest.commitment:  # ask on the same association, and take a report on it
            contexts.append(commitment.context())
            handlers += self.committer.handlers()
        try:
            session = scu.open_session(dest, self._calling_ae, contexts, handlers, attempt)
        except scu.AssociationFailed as exc:
            if stop is not None and stop.is_set():
                return results, False  # cut short at shutdown: nothing happened, nothing recorded
            if exc.tls_error is not None:
                self._tls_failed(dest, exc.tls_error)
            if exc.verdict.outcome is Outcome.RETRY:
                # The destination failed, not the objects: one retry time for its whole backlog,
                # so a down PACS sees one connection attempt per backoff.
                return results + self._back_off(dest, [(row, None, exc.verdict.reason) for row, _ in ready],
                                                exc.verdict.reason), False
            return results + [self._settle(row, exc.verdict, None) for row, _ in ready], True
        self._tls_works(dest)
        uids = [row.sop_instance_uid for row, _ in ready]
        backlog = _Backlog(ready)
        try:
            self._spool.mark_sending(dest.name, uids, self._clock())
            # with commitment, the request goes on the association that stored the batch: one
            extra = 0 if dest.commitment else min(dest.associations, len(ready)) - 1
            helpers = [threading.Thread(target=self._helper, args=(dest, contexts, handlers, backlog, stop, attempt),
                                        name=f"dxgate-forward-{dest.name}-{i + 2}", daemon=True)
                       for i in range(extra)]
            for t in helpers:
                t.start()
            try:
                self._send_share(session, dest, contexts, handlers, backlog, stop, attempt, commit=dest.commitment)
            finally:
                for t in helpers:
                    t.join()
            if backlog.error is not None:
                raise backlog.error
        finally:
            self._spool.unsend(dest.name, uids)  # what was never answered is pending again
        return results + backlog.results, backlog.go_on

    def _helper(self, dest: DestinationConfig, contexts: list[PresentationContext], handlers: list[EventHandlerType],
                backlog: _Backlog, stop: threading.Event | None, attempt: scu.Attempt | None) -> None:
        """A further association taking its share of the backlog; one the archive refuses
        leaves the backlog to the others."""
        try:
            if backlog.empty or (stop is not None and stop.is_set()):
                return
            try:
                session = scu.open_session(dest, self._calling_ae, contexts, handlers, attempt)
            except scu.AssociationFailed as exc:
                LOGGER.info("%s: a further association was not opened (%s); the others send its share",
                            dest.name, exc.verdict.reason)
                return
            self._send_share(session, dest, contexts, handlers, backlog, stop, attempt, commit=False)
        except Exception as exc:  # handed to the pass, which records it
            backlog.error = exc

    def _send_share(self, session: scu.Session, dest: DestinationConfig, contexts: list[PresentationContext],
                    handlers: list[EventHandlerType], backlog: _Backlog, stop: threading.Event | None,
                    attempt: scu.Attempt | None, *, commit: bool) -> None:
        """Send images from the shared backlog over one association until none is left, the
        destination fails (the rest of the backlog backs off) or `stop` is set; release it.

        An image's outcome is recorded (a durable transaction) on a second thread while the
        next image goes out, one record at a time and in order; every record is done before
        a failure is recorded, and before this returns."""
        sent: list[str] = []
        recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dxgate-record-{dest.name}")
        recording: list[Future[None]] = []

        def recorded() -> None:  # wait for the record in flight (and raise its error)
            while recording:
                recording.pop().result()

        def record(row: Delivery, verdict: Verdict, status: int | None) -> None:
            result = self._settle(row, verdict, status)
            backlog.add(result)
            if result.outcome is Outcome.SENT:
                sent.append(result.uid)
            if backlog.first_answer():  # the archive answers: its backlog need wait no longer
                self._spool.release_destination(dest.name, self._clock())

        try:
            while True:
                if stop is not None and stop.is_set():
                    backlog.go_on = False  # shutting down: the rest stays pending, untouched
                    return
                item = backlog.take()
                if item is None:
                    break
                row, ts = item
                if not session.established and session.refused_last:
                    # the association was aborted to keep a corrupt file from completing: a new one
                    session.release()
                    try:
                        session = scu.open_session(dest, self._calling_ae, contexts, handlers, attempt)
                    except scu.AssociationFailed:
                        pass  # handled as a lost association just below
                if not session.established:
                    why = "association lost before sending"
                    recorded()
                    backlog.fail(self._back_off(dest, [(r, None, why) for r, _ in [item, *backlog.drain()]], why))
                    return
                verdict, status = self._send_one(session, row, ts)
                recorded()
                if verdict.outcome is Outcome.RETRY and verdict.scope is Scope.DESTINATION:
                    if status is None and stop is not None and stop.is_set():
                        backlog.go_on = False  # cut at shutdown: outcome unknown, the row stays due
                        return
                    deferred = f"deferred: {dest.name} failed transiently on an earlier object"
                    items = [(row, status, verdict.reason)] + [(r, None, deferred) for r, _ in backlog.drain()]
                    backlog.fail(self._back_off(dest, items, verdict.reason))
                    return
                recording.append(recorder.submit(record, row, verdict, status))
            recorded()
            if commit and session.established and (stop is None or not stop.is_set()):
                self.committer.request(session, dest, sent)
        finally:
            try:
                recorded()
            finally:
                recorder.shutdown(wait=True)
                session.release()

    def _send_one(self, session: scu.Session, row: Delivery, transfer_syntax: str) -> tuple[Verdict, int | None]:
        try:
            reply = session.store(row, transfer_syntax)  # checks the file against the spool's sha256 first
        except scu.ObjectRefused as exc:
            return Verdict(Outcome.QUARANTINED, str(exc)), None
        if reply.status is None:
            return classify_transport(NO_RESPONSE), None
        return classify_status(reply.status, row.last_status), reply.status

    # --- TLS failures ----------------------------------------------------------------------

    def _tls_failed(self, dest: DestinationConfig, why: str) -> None:
        """A TLS handshake with the archive failed (its certificate not trusted, ours refused):
        an alarm, and a security audit event once per failure streak, not per retry."""
        self.alarms.raise_("forward-tls-failed", f"TLS with {dest.name} ({dest.host}:{dest.port}) failed: {why}; "
                           "nothing is sent until it works (check the certificates)", key=dest.name)
        if dest.name in self._tls_failing:
            return
        self._tls_failing.add(dest.name)
        if self.audit is None:
            return
        try:
            self.audit(audit_msg.tls_failed(local_ae=self._calling_ae, peer=f"{dest.called_ae}@{dest.host}:{dest.port}",
                                            address=dest.host, reason=why, when=datetime.now(UTC)))
        except Exception:  # an audit failure is logged; forwarding goes on
            LOGGER.exception("audit record of a TLS failure could not be written")

    def _tls_works(self, dest: DestinationConfig) -> None:
        if dest.name in self._tls_failing:
            self._tls_failing.discard(dest.name)
            self.alarms.clear("forward-tls-failed", dest.name)

    # --- recording -------------------------------------------------------------------------

    def _back_off(self, dest: DestinationConfig, items: list[tuple[Delivery, int | None, str]],
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
                out.append(self._report(DeliveryResult(row.sop_instance_uid, dest.name, Outcome.RETRY, status, why)))
        return out

    def _settle(self, row: Delivery, verdict: Verdict, status: int | None) -> DeliveryResult:
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
        return self._report(result)

    def _report(self, result: DeliveryResult) -> DeliveryResult:
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # a metrics hook must never break forwarding
                LOGGER.exception("forwarding result hook failed")
        return result
