"""The forwarder's worker threads, one per destination: started, retired, woken and stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.forward import scu

LOGGER = logging.getLogger(__name__)


@dataclass
class Worker:
    """One destination's thread: its own wake and stop, and the association it has open."""

    name: str
    wake: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    attempt: scu.Attempt = field(default_factory=scu.Attempt)
    thread: threading.Thread | None = None


class Workers:
    """A thread per destination, each running `work(worker)`; `stop` bounds how long they take."""

    def __init__(self, work: Callable[[Worker], None], *, stop_grace_s: float) -> None:
        self._work = work
        self._grace = stop_grace_s
        self._workers: dict[str, Worker] = {}  # while `run` runs
        self._retired: list[Worker] = []  # workers of destinations that left, finishing their pass

    def alive(self) -> bool:
        """Whether every destination's worker thread is running."""
        return all(w.thread is not None and w.thread.is_alive() for w in list(self._workers.values()))

    def wake(self, name: str) -> None:
        worker = self._workers.get(name)
        if worker is not None:
            worker.wake.set()

    def wake_all(self) -> None:
        for worker in list(self._workers.values()):
            worker.wake.set()

    def reconcile(self, wanted: set[str]) -> None:
        """One worker per configured destination: start missing ones (again, if one died),
        retire those of destinations that left."""
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
            worker = Worker(name)
            worker.thread = threading.Thread(target=self._work, args=(worker,), name=f"dxgate-forward-{name}",
                                             daemon=True)
            self._workers[name] = worker
            worker.thread.start()

    def stop(self, interrupt: Callable[[], None]) -> None:
        """Stop every worker: let each finish what is in flight for the grace time, then cut
        its association (an archive that never answers) and wait a little more. `interrupt`
        runs once all are told to stop (a worker holding its association for a report lets go)."""
        workers = list(self._workers.values()) + self._retired
        for w in workers:
            w.stop.set()
            w.wake.set()
        interrupt()
        deadline = _grace_clock() + self._grace
        for w in workers:
            if w.thread is not None:
                w.thread.join(max(0.0, deadline - _grace_clock()))
        busy = [w for w in workers if w.thread is not None and w.thread.is_alive()]
        for w in busy:
            LOGGER.warning("%s: still busy %.1f s after stop; cutting its association", w.name, self._grace)
            w.attempt.cancel()
        deadline = _grace_clock() + 1.0
        for w in busy:
            if w.thread is not None:
                w.thread.join(max(0.0, deadline - _grace_clock()))
            if w.thread is not None and w.thread.is_alive():
                LOGGER.error("%s: forwarding worker did not end; left behind (it records nothing more)", w.name)
        self._workers.clear()
        self._retired.clear()


def _grace_clock() -> float:
    return time.monotonic()  # real time: shutdown bounds are real, whatever clock is injected
