"""The closed exams kept for the append case, in the state database: what a new connection (a
restarted daemon) reads back, the 24 h / newest-N window, and the series number a reopen keeps."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from gateway.closed_exams import ClosedExams
from gateway.types import ProtocolCode, WorklistItem

DAY = 24 * 3600.0


def item(accession: str, **changes: Any) -> WorklistItem:
    base = WorklistItem(
        patient_name="Müller^Jörg", patient_id="PID-1", patient_birth_date=date(1970, 1, 2), patient_sex="M",
        accession_number=accession, study_instance_uid="1.2.3." + accession[-1], requested_procedure_id="RP1",
        requested_procedure_description="Chest", sps_id="SPS1", sps_description="Chest PA",
        sps_start=datetime(2026, 12, 1, 8, 30, tzinfo=UTC), modality="DX", scheduled_station_ae="DXGATE",
        protocol_codes=(ProtocolCode("99X", "CHPA", "Chest PA"),))
    return dataclasses.replace(base, **changes)


def test_a_new_connection_reads_back_every_order_and_series_number(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    group = item("ACC1", grouped=(item("ACC2"),))
    store = ClosedExams(db)
    store.closed("1.2.3.1", group, 1, now=1000.0)
    store.closed("1.2.3.9", None, 1, now=1001.0)  # an exam without patient
    store.close()

    again = ClosedExams(db)  # as after a restart
    try:
        got = again.recent(now=1002.0)
        assert [(c.study_uid, c.item, c.series_number) for c in got] == [("1.2.3.1", group, 1), ("1.2.3.9", None, 1)]
        again.reserve("1.2.3.1", 2)  # reopened: its series number is kept at once
        reopened = again.get("1.2.3.1", now=1003.0)
        assert reopened is not None and reopened.series_number == 2
        again.closed("1.2.3.1", group, 1, now=1004.0)  # an older number never lowers it; newest again
        assert [(c.study_uid, c.series_number) for c in again.recent(now=1005.0)] == [("1.2.3.9", 1), ("1.2.3.1", 2)]
    finally:
        again.close()
    with sqlite3.connect(db) as raw:  # one row per study, in the state database's own table
        assert raw.execute("select count(*) from closed_exams").fetchone() == (2,)
    assert db.stat().st_mode & 0o777 == 0o600  # patient data: owner only


def test_the_window_keeps_the_last_day_and_the_newest_n(tmp_path: Path) -> None:
    store = ClosedExams(tmp_path / "state.db", keep_max=3)
    try:
        store.closed("1.9.0", None, 1, now=0.0)
        assert store.get("1.9.0", now=DAY) is not None
        assert store.get("1.9.0", now=DAY + 1) is None  # closed more than a day ago: not listed
        for n in range(1, 5):
            store.closed(f"1.9.{n}", None, 1, now=DAY + n)
        assert [c.study_uid for c in store.recent(now=DAY + 5)] == ["1.9.2", "1.9.3", "1.9.4"]
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "state.db") as raw:  # what left the window is gone from the disk too
        assert raw.execute("select study_uid from closed_exams order by closed_at").fetchall() == [
            ("1.9.2",), ("1.9.3",), ("1.9.4",)]
