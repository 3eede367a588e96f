"""State-change notifications for the console (Server-Sent Events), fanned out to subscribers.

Notification only: clinical data never travels here (a frame, an image and its queue rows
live in the spool), so a slow console may lose notifications — each subscriber has a bounded
queue, the oldest notification is dropped when it is full, and drops are counted — but it can
never slow down an exposure. Payloads carry ids and states, never patient data.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

DEFAULT_DEPTH = 256


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str  # "exposure", "image", "exam", "alarm", "calibration", "queue", ...
    data: dict[str, Any]
    at: float = field(default_factory=time.time)


class Subscription:
    """One console's view of the event stream."""

    def __init__(self, bus: EventBus, depth: int) -> None:
        self._bus = bus
        self._q: queue.Queue[Event] = queue.Queue(maxsize=depth)
        self.dropped = 0

    def _offer(self, event: Event) -> None:
        while True:
            try:
                self._q.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` seconds without one."""
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus._unsubscribe(self)

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.get()
            if event is not None:
                yield event


class EventBus:
    """Thread-safe publish/subscribe of small state-change notifications."""

    def __init__(self, depth: int = DEFAULT_DEPTH, clock: Callable[[], float] = time.time) -> None:
        self._depth = depth
        self._clock = clock
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._seq = itertools.count(1)

    def publish(self, kind: str, **data: Any) -> Event:
        with self._lock:
            event = Event(seq=next(self._seq), kind=kind, data=data, at=self._clock())
            subs = list(self._subs)
        for sub in subs:
            sub._offer(event)
        return event

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._depth)
        with self._lock:
            self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)
