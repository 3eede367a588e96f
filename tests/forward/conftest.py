"""Fixtures for forward tests: a fake clock, a spool, and scriptable pynetdicom SCPs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.spool import Spool
from tests.forward.scp import ScriptedSCP


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(tmp_path: Path, clock: FakeClock) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=clock)
    yield s
    s.close()


@pytest.fixture
def scp_factory() -> Iterator[Callable[..., ScriptedSCP]]:
    started: list[ScriptedSCP] = []

    def make(**kwargs: object) -> ScriptedSCP:
        scp = ScriptedSCP(**kwargs).start()  # type: ignore[arg-type]
        started.append(scp)
        return scp

    yield make
    for scp in started:
        scp.stop()
