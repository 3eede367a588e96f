"""One destination's batch over its parallel associations: each image sent once, its outcome recorded."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext

from gateway.config import DestinationConfig
from gateway.forward import commitment, scu
from gateway.forward.backlog import Backlog
from gateway.forward.outcomes import DeliveryResult, Outcomes
from gateway.forward.status import Outcome, Scope, Verdict, classify_status, classify_transport
from gateway.forward.tls_failures import TlsFailures
from gateway.spool import Delivery, Spool

LOGGER = logging.getLogger(__name__)

NO_RESPONSE = ("no C-STORE response (association aborted, timed out or lost); "
               "outcome unknown, the same UID is resent")


class BatchSender:
    """Sends a batch of one destination's due deliveries and records what became of each."""

    def __init__(self, spool: Spool, *, calling_ae: str, clock: Callable[[], float],
                 handlers: Sequence[EventHandlerType], committer: commitment.Committer, outcomes: Outcomes,
                 tls: TlsFailures) -> None:
        self._spool = spool
        self._calling_ae = calling_ae
        self._clock = clock
        self._handlers = tuple(handlers)
        self._committer = committer
        self._outcomes = outcomes
        self._tls = tls

    def send_batch(self, dest: DestinationConfig, batch: list[Delivery], stop: threading.Event | None,
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
                results.append(self._outcomes.settle(row, Verdict(Outcome.QUARANTINED, str(exc)), None))
        if not ready:
            return results, True
        contexts = scu.build_contexts(((row.sop_class_uid, ts) for row, ts in ready), scu.wanted_syntax(dest))
        handlers = list(self._handlers)
        if dest.commitment:  # ask on the same association, and take a report on it
            contexts.append(commitment.context())
            handlers += self._committer.handlers()
        try:
            session = scu.open_session(dest, self._calling_ae, contexts, handlers, attempt)
        except scu.AssociationFailed as exc:
            if stop is not None and stop.is_set():
                return results, False  # cut short at shutdown: nothing happened, nothing recorded
            if exc.tls_error is not None:
                self._tls.failed(dest, exc.tls_error)
            if exc.verdict.outcome is Outcome.RETRY:
                # The destination failed, not the objects: one retry time for its whole backlog,
                # so a down PACS sees one connection attempt per backoff.
                return results + self._outcomes.back_off(
                    dest, [(row, None, exc.verdict.reason) for row, _ in ready], exc.verdict.reason), False
            return results + [self._outcomes.settle(row, exc.verdict, None) for row, _ in ready], True
        self._tls.works(dest)
        uids = [row.sop_instance_uid for row, _ in ready]
        backlog = Backlog(ready)
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
                backlog: Backlog, stop: threading.Event | None, attempt: scu.Attempt | None) -> None:
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
                    handlers: list[EventHandlerType], backlog: Backlog, stop: threading.Event | None,
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
            result = self._outcomes.settle(row, verdict, status)
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
                    backlog.fail(self._outcomes.back_off(
                        dest, [(r, None, why) for r, _ in [item, *backlog.drain()]], why))
                    return
                verdict, status = self._send_one(session, row, ts)
                recorded()
                if verdict.outcome is Outcome.RETRY and verdict.scope is Scope.DESTINATION:
                    if status is None and stop is not None and stop.is_set():
                        backlog.go_on = False  # cut at shutdown: outcome unknown, the row stays due
                        return
                    deferred = f"deferred: {dest.name} failed transiently on an earlier object"
                    items = [(row, status, verdict.reason)] + [(r, None, deferred) for r, _ in backlog.drain()]
                    backlog.fail(self._outcomes.back_off(dest, items, verdict.reason))
                    return
                recording.append(recorder.submit(record, row, verdict, status))
            recorded()
            if commit and session.established and (stop is None or not stop.is_set()):
                self._committer.request(session, dest, sent)
        finally:
            try:
                recorded()
            finally:
                recorder.shutdown(wait=True)
                session.release()

    def _send_one(self, session: scu.Session, row: Delivery, transfer_syntax: str) -> tuple[Verdict, int | None]:
        try:
            reply = session.store(row, transfer_syntax)  # checks the file against the digest the spool committed first
        except scu.ObjectRefused as exc:
            return Verdict(Outcome.QUARANTINED, str(exc)), None
        if reply.status is None:
            return classify_transport(NO_RESPONSE), None
        return classify_status(reply.status, row.last_status), reply.status
