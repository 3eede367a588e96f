"""Fixtures of the service tests: the simulated room the in-process daemon drives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hw_sim.room import SimRoom


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=4) as sim:
        yield sim
