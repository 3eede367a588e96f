"""Worklist entries as a RIS holds them, and an embedded worklist server to ask."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pytest
from pydicom.dataset import Dataset

from gateway.peers import WorklistServer, make_worklist_entry
from tests.peers import WLMSCPFS, WlmSCP, _start, free_port, require, wait_for_port

DAY = date(2026, 11, 22)
START = datetime(2026, 11, 22, 9, 30)
STATION = "DXGATE"


def entry(n: int, **kw: Any) -> Dataset:
    """Entry number n: patient P<n>, accession A<n>, study 1.2.826.0.1.3680043.10.543.<n>."""
    values: dict[str, Any] = dict(
        patient_name=f"Patient{n}^Test", patient_id=f"P{n}", birth_date="19700101", sex="F", accession=f"A{n}",
        study_uid=f"1.2.826.0.1.3680043.10.543.{n}", requested_procedure_id=f"RP{n}", sps_id=f"SPS{n}",
        sps_description="Thorax p.a.", station_ae=STATION, start=START)
    values.update(kw)
    return make_worklist_entry(**values)


def mixed_entries() -> list[Dataset]:
    """Three entries for this room in three character sets, and three that are not for it."""
    return [
        entry(1, patient_name="Müller^Jürgen", charset="ISO_IR 100", birth_date=date(1955, 11, 3), sex="M",
              protocol_codes=[("36554-4", "LN", "XR Chest PA")], referenced_study_uid="1.2.826.0.1.3680043.10.543.91",
              procedure_codes=[("RP-THX2", "99KLIN", "Röntgen Thorax 2 Ebenen")],
              referring_physician="Schmidt^Anna", issuer_of_patient_id="KLINIKUM",
              requested_procedure_description="Röntgen Thorax"),
        entry(2, patient_name="Παπαδόπουλος^Νίκος", start=datetime(2026, 11, 22, 8, 15)),
        entry(3, patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう", start=datetime(2026, 11, 22, 11, 0)),
        entry(4, station_ae="ROOM2"),
        entry(5, modality="CR"),
        entry(6, start=datetime(2026, 11, 23, 9, 0)),
    ]


@pytest.fixture
def ris() -> Iterator[WorklistServer]:
    server = WorklistServer(mixed_entries(), ae_title="RIS")
    server.port = server.start()  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ConfiguredWlmSCP(WlmSCP):
    """DCMTK wlmscpfs with chosen options: how it answers character sets (--keep-char-set, or by
    default none at all), and --disable-file-reject to serve entries its completeness check
    refuses, as a RIS does (wlmscpfs alone never serves an empty Scheduled Station AE Title)."""

    options: tuple[str, ...] = ("--keep-char-set",)

    def start(self) -> ConfiguredWlmSCP:
        exe = require(WLMSCPFS)
        self.worklist_dir.mkdir(parents=True, exist_ok=True)
        (self.worklist_dir / "lockfile").touch()
        self.port = free_port()
        log = self.root / "wlmscpfs.log"
        self.proc = _start([exe, "--verbose", *self.options, "--data-files-path", str(self.worklist_dir.parent),
                            "--max-pdu", "131072", str(self.port)], log, self.root)
        wait_for_port(self.port, self.proc, log)
        return self


@pytest.fixture
def wlmscpfs_with(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ConfiguredWlmSCP]]:
    """start(*options): a wlmscpfs started with those options, stopped after the test."""
    started: list[ConfiguredWlmSCP] = []

    def start(*options: str) -> ConfiguredWlmSCP:
        peer = ConfiguredWlmSCP(tmp_path_factory.mktemp("wlmscpfs"), options=options).start()
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()
