"""Worklist entries as a RIS holds them, and an embedded worklist server to ask."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import pytest
from pydicom.dataset import Dataset

from gateway.peers import WorklistServer, make_worklist_entry

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
