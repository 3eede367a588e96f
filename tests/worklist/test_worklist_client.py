"""The MWL client against the embedded worklist server: keys, decoding, filtering, failures."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.errors import WorklistError
from gateway.peers import WorklistServer
from gateway.types import ProtocolCode
from gateway.worklist import query_worklist, query_worklist_result
from tests.worklist.conftest import DAY, STATION, entry, mixed_entries


def ask(server: Any, **kw: Any) -> Any:
    args: dict[str, Any] = dict(host="127.0.0.1", port=server.port, called_ae=server.ae_title, calling_ae=STATION,
                                station_ae=STATION, on=DAY, timeout_s=5.0)
    args.update(kw)
    return query_worklist_result(**args)


def test_returns_this_rooms_steps_decoded_from_each_character_set(ris: WorklistServer) -> None:
    result = ask(ris)
    assert [i.accession_number for i in result.items] == ["A2", "A1", "A3"]  # by scheduled start
    by_acc = {i.accession_number: i for i in result.items}
    assert by_acc["A1"].patient_name == "Müller^Jürgen"  # ISO_IR 100 on the wire
    assert by_acc["A2"].patient_name == "Παπαδόπουλος^Νίκος"  # ISO_IR 192
    assert by_acc["A3"].patient_name == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    a1 = by_acc["A1"]
    assert (a1.patient_id, a1.patient_birth_date, a1.patient_sex) == ("P1", date(1955, 11, 3), "M")
    assert a1.study_instance_uid == "1.2.826.0.1.3680043.10.543.1"
    assert (a1.requested_procedure_id, a1.sps_id, a1.sps_description) == ("RP1", "SPS1", "Thorax p.a.")
    assert a1.requested_procedure_description == "Röntgen Thorax"
    assert a1.sps_start == datetime(2026, 11, 22, 9, 30) and a1.modality == "DX"
    assert a1.scheduled_station_ae == STATION and a1.referring_physician == "Schmidt^Anna"
    assert a1.issuer_of_patient_id == "KLINIKUM"
    assert a1.protocol_codes == (ProtocolCode("36554-4", "LN", "XR Chest PA"),)
    assert a1.referenced_study_sop_instance_uid == "1.2.826.0.1.3680043.10.543.91"
    assert result.skipped == () and result.filtered_out == 0


def test_sends_ihe_swf_query_keys(ris: WorklistServer) -> None:
    ask(ris, patient_id="P1", accession_number="A1", days_ahead=2)
    q = ris.queries[-1]
    sps = q.ScheduledProcedureStepSequence[0]
    assert (sps.Modality, sps.ScheduledStationAETitle) == ("DX", STATION)
    assert sps.ScheduledProcedureStepStartDate == "20261122-20261124"
    assert (q.PatientID, q.AccessionNumber) == ("P1", "A1")
    for kw in ("PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "RequestedProcedureID",
               "ReferringPhysicianName", "ReferencedStudySequence"):
        assert kw in q, kw
    for kw in ("ScheduledProcedureStepID", "ScheduledProcedureStepDescription", "ScheduledProtocolCodeSequence",
               "ScheduledProcedureStepStartTime"):
        assert kw in sps, kw


def test_days_ahead_widens_the_date_range(ris: WorklistServer) -> None:
    assert "A6" not in {i.accession_number for i in ask(ris).items}
    assert "A6" in {i.accession_number for i in ask(ris, days_ahead=1).items}


def test_patient_id_and_accession_narrow_the_query(ris: WorklistServer) -> None:
    assert [i.accession_number for i in ask(ris, patient_id="P2").items] == ["A2"]
    assert [i.accession_number for i in ask(ris, accession_number="A3").items] == ["A3"]
    assert [i.accession_number for i in ask(ris, accession_number="A*", patient_id="P1").items] == ["A1"]


def test_query_worklist_returns_the_items(ris: WorklistServer) -> None:
    items = query_worklist(host="127.0.0.1", port=ris.port, called_ae="RIS",  # type: ignore[attr-defined]
                           calling_ae=STATION, station_ae=STATION, on=DAY)
    assert len(items) == 3


class SloppyServer(WorklistServer):
    """A server that ignores every matching key and sends back whatever it holds."""

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        self.queries.append(event.identifier)
        for item in self.items:
            yield 0xFF00, item


@pytest.fixture
def sloppy() -> Iterator[SloppyServer]:
    server = SloppyServer(mixed_entries(), ae_title="SLOPPY")
    server.port = server.start()  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


def test_filters_on_the_client_when_the_server_ignores_keys(sloppy: SloppyServer) -> None:
    result = ask(sloppy)
    assert result.answers == 6
    assert [i.accession_number for i in result.items] == ["A2", "A1", "A3"]
    assert result.filtered_out == 3
    assert [i.accession_number for i in ask(sloppy, patient_id="P3").items] == ["A3"]


def _without(ds: Dataset, *path: str) -> Dataset:
    ds = ds.copy()
    target = ds
    for kw in path[:-1]:
        target = getattr(target, kw)[0]
    delattr(target, path[-1])
    return ds


def _with(ds: Dataset, value: str, *path: str) -> Dataset:
    ds = ds.copy()
    target = ds
    for kw in path[:-1]:
        target = getattr(target, kw)[0]
    setattr(target, path[-1], value)
    return ds


@pytest.mark.parametrize("broken, reason", [
    (lambda e: _without(e, "ScheduledProcedureStepSequence"), "no ScheduledProcedureStepSequence"),
    (lambda e: _without(e, "PatientID"), "no PatientID"),
    (lambda e: _with(e, "", "PatientID"), "no PatientID"),
    (lambda e: _without(e, "StudyInstanceUID"), "no StudyInstanceUID"),
    (lambda e: _with(e, "1.2.03.x", "StudyInstanceUID"), "StudyInstanceUID is not a valid UID"),
    (lambda e: _with(e, "20261322", "ScheduledProcedureStepSequence", "ScheduledProcedureStepStartDate"),
     "StartDate is not a valid date"),
    (lambda e: _without(e, "ScheduledProcedureStepSequence", "ScheduledProcedureStepStartDate"),
     "no ScheduledProcedureStepStartDate"),
    (lambda e: _with(e, "2561", "ScheduledProcedureStepSequence", "ScheduledProcedureStepStartTime"),
     "StartTime is not a valid time"),
    (lambda e: _with(e, "1970-01-01", "PatientBirthDate"), "PatientBirthDate is not a valid date"),
])
def test_malformed_answer_is_skipped_with_a_reason_and_no_patient_data(
        broken: Any, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    with pydicom.config.disable_value_validation():  # a RIS does not validate what it sends either
        bad = broken(entry(7, patient_name="Secret^Name", patient_id="SECRET7"))
        server = SloppyServer([entry(1), bad, entry(2)], ae_title="SLOPPY")
        server.port = server.start()  # type: ignore[attr-defined]
        try:
            with caplog.at_level("INFO"):
                result = ask(server)
        finally:
            server.stop()
    assert [i.accession_number for i in result.items] == ["A1", "A2"]
    assert len(result.skipped) == 1 and reason in result.skipped[0] and "answer 2" in result.skipped[0]
    assert reason in caplog.text
    assert "Secret" not in caplog.text and "SECRET7" not in caplog.text and "Secret" not in result.skipped[0]


def test_refused_connection_names_the_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(WorklistError, match=rf"RIS@127\.0\.0\.1:{port}.*no association"):
        query_worklist(host="127.0.0.1", port=port, called_ae="RIS", calling_ae=STATION, timeout_s=2.0)


def test_rejected_association_names_the_called_ae(ris: WorklistServer) -> None:
    with pytest.raises(WorklistError, match=r"WRONG_AE@127\.0\.0\.1:\d+: association rejected"):
        ask(ris, called_ae="WRONG_AE")


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts at TCP level (backlog), never speaks DICOM
        port = listener.getsockname()[1]
        with pytest.raises(WorklistError, match=rf":{port}: no association .*0\.5s"):
            query_worklist(host="127.0.0.1", port=port, called_ae="RIS", calling_ae=STATION, timeout_s=0.5)


class FailingServer(WorklistServer):
    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        yield 0xFF00, self.items[0]
        yield 0xC001, None


def test_failure_status_is_an_error() -> None:
    server = FailingServer([entry(1)], ae_title="RIS")
    server.port = server.start()  # type: ignore[attr-defined]
    try:
        with pytest.raises(WorklistError, match="status 0xC001"):
            ask(server)
    finally:
        server.stop()


def test_negative_days_ahead_is_refused() -> None:
    with pytest.raises(WorklistError, match="days_ahead"):
        query_worklist(host="127.0.0.1", port=1, called_ae="RIS", calling_ae=STATION, days_ahead=-1)


def test_association_has_tcp_nodelay(ris: WorklistServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import netopts
    from gateway.worklist import client

    seen: list[bool] = []
    real = netopts.nodelay_handlers

    def spying() -> list[Any]:
        def check(event: Any) -> None:
            seen.append(netopts.socket_nodelay(event.assoc))
        return [*real(), (netopts.evt.EVT_ESTABLISHED, check)]

    monkeypatch.setattr(client, "nodelay_handlers", spying)
    ask(ris)
    assert seen == [True]


def test_concurrent_queries_do_not_interfere(ris: WorklistServer) -> None:
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(len(ask(ris).items))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [3, 3, 3, 3]


def test_date_defaults_to_today() -> None:
    """Entries for today and tomorrow: the default asks for the day the query runs on (also
    when midnight passes while the test runs)."""
    before = date.today()
    at_nine = datetime.combine(before, datetime.min.time()) + timedelta(hours=9)
    server = WorklistServer([entry(1, start=at_nine), entry(2, start=at_nine + timedelta(days=1))], ae_title="RIS")
    port = server.start()
    try:
        items = query_worklist(host="127.0.0.1", port=port, called_ae="RIS", calling_ae=STATION, timeout_s=5.0)
    finally:
        server.stop()
    after = date.today()
    got = [i.accession_number for i in items]
    assert got == ["A1"] or (after != before and got == ["A2"]), got
