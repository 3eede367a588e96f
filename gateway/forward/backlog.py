"""A batch shared by one destination's parallel associations, each image taken exactly once."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from gateway.forward.outcomes import DeliveryResult
from gateway.spool import Delivery


class Backlog:
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
