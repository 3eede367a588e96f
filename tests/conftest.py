"""Shared fixtures: the real peers (see tests/peers.py) and the DICOM validator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.netopts import configure_pynetdicom
from tests.peers import Orthanc, StoreSCP, WlmSCP, dciodvfy_errors


@pytest.fixture(autouse=True, scope="session")
def _pynetdicom_as_dxgate_runs_it() -> None:
    """The settings the composition root applies (no identifiers in logs, streamed C-STORE),
    also for tests that drive a stage without a Gateway."""
    configure_pynetdicom()


@pytest.fixture
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    peer = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def storescp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreSCP]:
    peer = StoreSCP(tmp_path_factory.mktemp("storescp")).start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def wlmscpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WlmSCP]:
    peer = WlmSCP(tmp_path_factory.mktemp("wlmscpfs")).start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def dciodvfy() -> Callable[[Path | str], None]:
    """check(path): assert that dciodvfy finds no error in the file."""

    def check(path: Path | str) -> None:
        errors = dciodvfy_errors(path)
        assert not errors, f"dciodvfy errors in {path}:\n" + "\n".join(errors)

    return check
