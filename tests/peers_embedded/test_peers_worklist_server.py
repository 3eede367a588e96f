"""The embedded RIS: its matching rules, its answers, and its entries as worklist files."""

from __future__ import annotations

import io
import subprocess
from datetime import date, datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.peers import WorklistServer, make_worklist_entry, worklist_file_bytes
from gateway.peers.worklist_server import matches, project
from gateway.worklist import query_worklist
from tests.peers import require

START = datetime(2026, 11, 22, 9, 30)


def entry(**kw: object) -> Dataset:
    values: dict[str, object] = dict(
        patient_name="Müller^Jürgen", patient_id="P1", birth_date=date(1955, 11, 3), sex="M", accession="A1",
        study_uid="1.2.3.4", requested_procedure_id="RP1", sps_id="S1", sps_description="Thorax p.a.",
        station_ae="DXGATE", start=START)
    values.update(kw)
    return make_worklist_entry(**values)  # type: ignore[arg-type]


def query(**top: str) -> Dataset:
    sps_keys = {k: top.pop(k) for k in list(top) if k in ("Modality", "ScheduledStationAETitle",
                                                           "ScheduledProcedureStepStartDate")}
    q = Dataset()
    for k, v in top.items():
        setattr(q, k, v)
    sps = Dataset()
    for k, v in sps_keys.items():
        setattr(sps, k, v)
    q.ScheduledProcedureStepSequence = Sequence([sps])
    return q


@pytest.mark.parametrize("keys, expected", [
    (dict(Modality="DX"), True), (dict(Modality="CR"), False),
    (dict(ScheduledStationAETitle="DXGATE"), True), (dict(ScheduledStationAETitle="ROOM2"), False),
    (dict(ScheduledStationAETitle="DX*"), True),
    (dict(ScheduledProcedureStepStartDate="20261122"), True),
    (dict(ScheduledProcedureStepStartDate="20261121-20261123"), True),
    (dict(ScheduledProcedureStepStartDate="20261123-"), False),
    (dict(ScheduledProcedureStepStartDate="-20261122"), True),
    (dict(PatientID="P1"), True), (dict(PatientID="P2"), False), (dict(AccessionNumber="A?"), True),
    (dict(PatientName="müller*"), True),  # PN matching is case-insensitive here
    (dict(PatientName=""), True), (dict(StudyInstanceUID="1.2.3.4\\1.2.3.5"), True),
])
def test_matching(keys: dict[str, str], expected: bool) -> None:
    assert matches(query(**keys), entry()) is expected


def test_answer_holds_the_requested_attributes_only() -> None:
    q = query(Modality="DX", PatientName="", IssuerOfPatientID="")
    q.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID = ""
    answer = project(q, entry(charset="ISO_IR 100"))
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert str(answer.PatientName) == "Müller^Jürgen" and answer.IssuerOfPatientID == ""
    assert "PatientID" not in answer
    sps = answer.ScheduledProcedureStepSequence[0]
    assert (sps.Modality, sps.ScheduledProcedureStepID) == ("DX", "S1") and "ScheduledStationAETitle" not in sps


def test_entry_as_worklist_file() -> None:
    data = worklist_file_bytes(entry(protocol_codes=[("36554-4", "LN", "XR Chest PA")]))
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.31"
    assert str(back.PatientName) == "Müller^Jürgen" and back.PatientBirthDate == "19551103"
    sps = back.ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime) == ("20261122", "093000")
    assert sps.ScheduledProtocolCodeSequence[0].CodeValue == "36554-4"


def test_entry_refuses_text_its_character_set_cannot_hold() -> None:
    with pytest.raises(ValueError, match="PatientName cannot be written in character set ISO_IR 100"):
        entry(patient_name="山田^太郎", charset="ISO_IR 100")
    with pytest.raises(ValueError, match="not a DICOM character set"):
        entry(charset="ISO_IR 999")


def test_items_can_be_replaced_while_running() -> None:
    server = WorklistServer([entry()], ae_title="RIS")
    port = server.start()
    try:
        ask = dict(host="127.0.0.1", port=port, called_ae="RIS", calling_ae="DXGATE", station_ae="DXGATE",
                   on=START.date(), timeout_s=5.0)
        assert [i.accession_number for i in query_worklist(**ask)] == ["A1"]  # type: ignore[arg-type]
        server.items = [entry(accession="A2"), entry(accession="A3")]
        assert sorted(i.accession_number for i in query_worklist(**ask)) == ["A2", "A3"]  # type: ignore[arg-type]
    finally:
        server.stop()


@pytest.mark.peers
def test_dcmtk_findscu_gets_answers(tmp_path: Path) -> None:
    findscu = require("/usr/bin/findscu")
    server = WorklistServer([entry(), entry(accession="A2", station_ae="ROOM2")], ae_title="RIS")
    port = server.start()
    try:
        out = subprocess.run([findscu, "-W", "-aet", "DXGATE", "-aec", "RIS", "-k", "(0008,0050)",
                              "-k", "(0040,0100)[0].(0040,0001)=DXGATE", "127.0.0.1", str(port)],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    finally:
        server.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "[A1]" in text and "[A2]" not in text
