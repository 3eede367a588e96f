"""A spool on a temporary directory with an injected clock, for the queue and retention tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.spool import Spool
from tests.spool.objects import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spool(tmp_path: Path, clock: Clock) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=clock)
    yield s
    s.close()
