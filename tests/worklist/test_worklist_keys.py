"""Which matching keys the worklist query sends ([worklist] match_station_ae, modality,
station_name, date_range), against the real servers a site runs and the embedded one.

Many RIS leave Scheduled Station AE Title empty in their entries, and an empty value never
matches a non-empty key (PS3.4 C.2.2.2.1): a query that always sent dxgate's own AE title found
nothing on DCMTK wlmscpfs or Orthanc serving such entries. The default sends no station AE.
(wlmscpfs on its own refuses to serve such entries as incomplete; with --disable-file-reject it
serves them as the site's RIS does.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from gateway.config import Config, WorklistConfig
from gateway.peers import WorklistServer, worklist_file_bytes
from gateway.worklist_service import WorklistService
from tests.peers import Orthanc
from tests.worklist.conftest import DAY, START, STATION, ConfiguredWlmSCP, entry

NOW = datetime.combine(DAY, START.time())
SERVE_EMPTY_STATION_AE = ("--keep-char-set", "--disable-file-reject")


def ris_entries() -> list[Dataset]:
    """What a RIS that does not fill the station AE holds, plus one entry that names this room."""
    return [
        entry(11, station_ae=""),
        entry(12, station_ae="", start=START - timedelta(hours=1, minutes=30)),
        entry(13),  # for this room by AE title
        entry(14, station_ae="", modality="CR"),
        entry(15, station_ae="", start=START + timedelta(days=1)),
        entry(16, station_ae="", start=START - timedelta(days=1)),
    ]


def service(tmp_path: Path, port: int, called_ae: str, **worklist: Any) -> WorklistService:
    config = Config(state_dir=str(tmp_path), worklist=WorklistConfig(port=port, called_ae=called_ae, timeout_s=5.0,
                                                                     **worklist))
    assert config.site.ae_title == STATION
    return WorklistService(config, clock=lambda: NOW)


def publish(entries: list[Dataset], directory: Path) -> None:
    for n, e in enumerate(entries, 1):
        (directory / f"entry{n}.wl").write_bytes(worklist_file_bytes(e))


def accessions(view: Any) -> list[str]:
    return [i.accession_number for i in view.items]


@pytest.mark.peers
def test_wlmscpfs_entries_with_an_empty_station_ae_are_found_with_the_default_config(
        wlmscpfs_with: Callable[..., ConfiguredWlmSCP], tmp_path: Path) -> None:
    wlmscpfs = wlmscpfs_with(*SERVE_EMPTY_STATION_AE)
    publish(ris_entries(), wlmscpfs.worklist_dir)
    view = service(tmp_path, wlmscpfs.port, wlmscpfs.aet).worklist()
    assert view.source == "ris"
    assert accessions(view) == ["A12", "A11", "A13"]  # DX, today; CR, tomorrow and yesterday not asked for
    # matching the station AE is the site's choice, and then the RIS's empty values do not match
    strict = service(tmp_path, wlmscpfs.port, wlmscpfs.aet, match_station_ae=True).worklist()
    assert accessions(strict) == ["A13"]


@pytest.mark.peers
def test_wlmscpfs_modality_and_date_range_keys(wlmscpfs_with: Callable[..., ConfiguredWlmSCP],
                                               tmp_path: Path) -> None:
    wlmscpfs = wlmscpfs_with(*SERVE_EMPTY_STATION_AE)
    publish(ris_entries(), wlmscpfs.worklist_dir)
    any_modality = service(tmp_path, wlmscpfs.port, wlmscpfs.aet, modality="").worklist()
    assert accessions(any_modality) == ["A12", "A11", "A13", "A14"]
    around = service(tmp_path, wlmscpfs.port, wlmscpfs.aet, days_before=1, days_ahead=1).worklist()
    assert accessions(around) == ["A16", "A12", "A11", "A13", "A15"]
    undated = service(tmp_path, wlmscpfs.port, wlmscpfs.aet, date_range="none").worklist()
    assert accessions(undated) == ["A16", "A12", "A11", "A13", "A15"]


@pytest.mark.peers
def test_wlmscpfs_station_name_key(wlmscpfs_with: Callable[..., ConfiguredWlmSCP], tmp_path: Path) -> None:
    wlmscpfs = wlmscpfs_with(*SERVE_EMPTY_STATION_AE)
    publish([entry(21, station_ae="", station_name="DXROOM1"), entry(22, station_ae="", station_name="DXROOM2"),
             entry(23, station_ae="")], wlmscpfs.worklist_dir)
    assert accessions(service(tmp_path, wlmscpfs.port, wlmscpfs.aet).worklist()) == ["A21", "A22", "A23"]
    # wlmscpfs returns Scheduled Station Name but does not match on it: dxgate's own filter drops the
    # entry naming another station, and keeps the one naming none (as it does for the station AE)
    assert accessions(service(tmp_path, wlmscpfs.port, wlmscpfs.aet, station_name="DXROOM1").worklist()) == [
        "A21", "A23"]


@pytest.mark.peers
def test_orthanc_entries_with_an_empty_station_ae_are_found_with_the_default_config(
        orthanc: Orthanc, tmp_path: Path) -> None:
    publish(ris_entries(), orthanc.worklist_dir)
    assert accessions(service(tmp_path, orthanc.dicom_port, orthanc.aet).worklist()) == ["A12", "A11", "A13"]
    assert accessions(service(tmp_path, orthanc.dicom_port, orthanc.aet, match_station_ae=True).worklist()) == [
        "A13"]


# --- the keys on the wire (the embedded server records every query) ---------------------------------

@pytest.fixture
def recording() -> Iterator[WorklistServer]:
    server = WorklistServer(ris_entries(), ae_title="RIS")
    server.port = server.start()  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


def sent_keys(server: WorklistServer, tmp_path: Path, **worklist: Any) -> tuple[Dataset, list[str]]:
    view = service(tmp_path, server.port, "RIS", **worklist).worklist()  # type: ignore[attr-defined]
    return server.queries[-1].ScheduledProcedureStepSequence[0], accessions(view)


def test_default_keys_are_modality_and_today_and_no_station(recording: WorklistServer, tmp_path: Path) -> None:
    sps, found = sent_keys(recording, tmp_path)
    assert (sps.ScheduledStationAETitle, sps.ScheduledStationName) == ("", "")
    assert (sps.Modality, sps.ScheduledProcedureStepStartDate) == ("DX", "20261122")
    assert found == ["A12", "A11", "A13"]


@pytest.mark.parametrize("worklist, keys, found", [
    ({"match_station_ae": True}, ("DXGATE", "", "DX", "20261122"), ["A13"]),
    ({"station_name": "DXROOM1"}, ("", "DXROOM1", "DX", "20261122"), []),  # no entry names a station
    ({"modality": ""}, ("", "", "", "20261122"), ["A12", "A11", "A13", "A14"]),
    ({"days_before": 1}, ("", "", "DX", "20261121-20261122"), ["A16", "A12", "A11", "A13"]),
    ({"days_ahead": 1}, ("", "", "DX", "20261122-20261123"), ["A12", "A11", "A13", "A15"]),
    ({"date_range": "none"}, ("", "", "DX", ""), ["A16", "A12", "A11", "A13", "A15"]),
])
def test_configured_keys(recording: WorklistServer, tmp_path: Path, worklist: dict[str, Any],
                         keys: tuple[str, ...], found: list[str]) -> None:
    sps, got = sent_keys(recording, tmp_path, **worklist)
    assert (sps.ScheduledStationAETitle, sps.ScheduledStationName, sps.Modality,
            sps.ScheduledProcedureStepStartDate) == keys
    assert got == found


class KeyIgnoringServer(WorklistServer):
    """Answers every entry, whatever the keys: dxgate filters on its side too."""

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        self.queries.append(event.identifier)
        for item in self.items:
            yield 0xFF00, item


def test_the_client_filters_what_a_server_ignoring_the_keys_sends(tmp_path: Path) -> None:
    server = KeyIgnoringServer(ris_entries() + [entry(17, station_ae="", station_name="DXROOM2"),
                                                entry(18, station_ae="ROOM2")], ae_title="RIS")
    server.port = server.start()  # type: ignore[attr-defined]
    try:
        # the default: DX and today; an entry for another room's AE stays (its AE is not matched)
        assert accessions(service(tmp_path, server.port, "RIS").worklist()) == [  # type: ignore[attr-defined]
            "A12", "A11", "A13", "A17", "A18"]
        # station name: entries naming another station go, entries naming none stay (as for the AE)
        assert accessions(service(tmp_path, server.port, "RIS",  # type: ignore[attr-defined]
                                  station_name="DXROOM1").worklist()) == ["A12", "A11", "A13", "A18"]
        assert accessions(service(tmp_path, server.port, "RIS",  # type: ignore[attr-defined]
                                  match_station_ae=True).worklist()) == ["A12", "A11", "A13", "A17"]
    finally:
        server.stop()
