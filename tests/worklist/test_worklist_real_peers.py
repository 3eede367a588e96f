"""The MWL client against the real worklist servers: Orthanc's worklist plugin and DCMTK wlmscpfs."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from gateway.errors import WorklistError
from gateway.peers import worklist_file_bytes
from gateway.worklist import query_worklist, query_worklist_result
from tests.peers import Orthanc, WlmSCP
from tests.worklist.conftest import DAY, STATION, entry, mixed_entries

pytestmark = pytest.mark.peers


def publish(entries: list[Dataset], directory: Path) -> None:
    for n, e in enumerate(entries, 1):
        (directory / f"entry{n}.wl").write_bytes(worklist_file_bytes(e))


def latin1_representable() -> list[Dataset]:
    """Names Orthanc can pass on with its default (Latin-1) encoding, from both file charsets."""
    return [e for e in mixed_entries() if e.AccessionNumber not in ("A2", "A3")] + [
        entry(7, patient_name="Núñez^José", charset="ISO_IR 192")]


def test_orthanc_worklist_plugin(orthanc: Orthanc) -> None:
    publish(latin1_representable(), orthanc.worklist_dir)
    result = query_worklist_result(host="127.0.0.1", port=orthanc.dicom_port, called_ae=orthanc.aet,
                                   calling_ae=STATION, station_ae=STATION, on=DAY, timeout_s=10.0)
    assert result.skipped == ()
    names = {i.accession_number: i.patient_name for i in result.items}
    assert names == {"A1": "Müller^Jürgen", "A7": "Núñez^José"}  # A4 (room), A5 (CR), A6 (tomorrow) excluded
    a1 = next(i for i in result.items if i.accession_number == "A1")
    assert a1.patient_birth_date == date(1955, 11, 3) and a1.requested_procedure_description == "Röntgen Thorax"
    assert a1.referenced_study_sop_instance_uid == "1.2.826.0.1.3680043.10.543.91"
    assert [c.value for c in a1.protocol_codes] == ["36554-4"]
    assert [(c.value, c.scheme, c.meaning) for c in a1.procedure_codes] == \
        [("RP-THX2", "99KLIN", "Röntgen Thorax 2 Ebenen")]
    assert a1.referenced_study_sop_class_uid == "1.2.840.10008.3.1.2.3.1"  # as the RIS gave it


def test_orthanc_by_patient_id_and_days_ahead(orthanc: Orthanc) -> None:
    publish(mixed_entries(), orthanc.worklist_dir)
    ask = dict(host="127.0.0.1", port=orthanc.dicom_port, called_ae=orthanc.aet, calling_ae=STATION,
               station_ae=STATION, on=DAY, timeout_s=10.0)
    assert [i.accession_number for i in query_worklist(**ask, patient_id="P1")] == ["A1"]  # type: ignore[arg-type]
    assert "A6" in {i.accession_number for i in query_worklist(**ask, days_ahead=1)}  # type: ignore[arg-type]


def test_wlmscpfs_all_character_sets(wlmscpfs: WlmSCP) -> None:
    publish(mixed_entries(), wlmscpfs.worklist_dir)
    result = query_worklist_result(host="127.0.0.1", port=wlmscpfs.port, called_ae=wlmscpfs.aet,
                                   calling_ae=STATION, station_ae=STATION, on=DAY, timeout_s=10.0)
    assert result.skipped == ()
    names = {i.accession_number: i.patient_name for i in result.items}
    assert names == {"A1": "Müller^Jürgen",  # ISO_IR 100 file
                     "A2": "Παπαδόπουλος^Νίκος",  # ISO_IR 192 files
                     "A3": "Yamada^Tarou=山田^太郎=やまだ^たろう"}
    assert [i.accession_number for i in result.items] == ["A2", "A1", "A3"]


def test_wlmscpfs_wrong_called_ae_is_an_error(wlmscpfs: WlmSCP) -> None:
    with pytest.raises(WorklistError, match=rf"NOSUCHAE@127\.0\.0\.1:{wlmscpfs.port}"):
        query_worklist(host="127.0.0.1", port=wlmscpfs.port, called_ae="NOSUCHAE", calling_ae=STATION,
                       on=DAY, timeout_s=10.0)
