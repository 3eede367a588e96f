"""The two IHE Scheduled Workflow exam cases from the console, in real Chromium against the whole
system (the simulator process, Orthanc as RIS and PACS, `dxgate run`):

- the group case: the technologist ticks two worklist entries of one patient (entries of other
  patients cannot then be ticked), opens them together, and the banner names both orders; an
  order cancelled at the RIS meanwhile is refused by the API and the console says so;
- the append case: the closed exam is in the Reopen list, reopened, and another view exposed.

The truth is the archive's own stored files (Orthanc REST, checked by dciodvfy): the first image
names both orders (Request Attributes Sequence), the second is in the same study, a new series.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest

from gateway.peers import make_worklist_entry, worklist_file_bytes
from tests.console.conftest import OTHER_ACCESSION, Room, wait_archived
from tests.console.test_console import api_json, expect, expose, log_in

pytestmark = pytest.mark.peers

PATIENT = "Gruppe^Greta"
PATIENT_ID = "PIDGROUP5"
ORDERS = (("ACCGROUP1", "RPG1", "Chest PA", "1.2.826.0.1.3680043.10.999.851"),  # accession, RP, SPS, its study
          ("ACCGROUP2", "RPG2", "Ribs right", "1.2.826.0.1.3680043.10.999.852"))
FIRST_STUDY = ORDERS[0][3]  # the group's images go into the first ticked order's study


def order_file(room: Room, accession: str, rp: str, description: str, study_uid: str) -> Path:
    path = room.orthanc.worklist_dir / f"{accession}.wl"
    path.write_bytes(worklist_file_bytes(make_worklist_entry(
        patient_name=PATIENT, patient_id=PATIENT_ID, birth_date="19720304", sex="F", accession=accession,
        study_uid=study_uid, requested_procedure_id=rp, sps_id=f"S{rp}", sps_description=description,
        station_ae="DXGATE", start=datetime.now(UTC))))
    return path


def archived_file(room: Room, uid: str, tmp_path: Path, dciodvfy: Callable[[Path | str], None]) -> pydicom.Dataset:
    """The archive's stored file of an instance, valid by dciodvfy."""
    wait_archived(room.orthanc, uid)
    oid = room.orthanc.find_instance(uid)
    assert oid is not None
    data = room.orthanc.instance_file(oid)
    path = tmp_path / f"{uid}.dcm"
    path.write_bytes(data)
    dciodvfy(path)
    return pydicom.dcmread(io.BytesIO(data))


def test_group_then_append_from_the_console(room: Room, browser: Any, tmp_path: Path,
                                            dciodvfy: Callable[[Path | str], None]) -> None:
    e = expect()
    files = [order_file(room, *o) for o in ORDERS]
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        log_in(page, room, "tina")
        page.click("#refresh")  # the RIS has the two new orders
        first, second = (page.locator(f"input.pick[data-accession='{o[0]}']") for o in ORDERS)
        other = page.locator(f"input.pick[data-accession='{OTHER_ACCESSION}']")
        e(second).to_be_enabled()
        first.check()
        e(other).to_be_disabled()  # another patient's order cannot join
        e(second).to_be_enabled()
        e(page.locator("#open-together")).to_be_disabled()  # one order is no group
        second.check()
        e(page.locator("#open-together")).to_be_enabled()
        room.shot(page, "cases-1-two-ticked")

        # the RIS cancels the second order meanwhile: the API refuses the group, the console says so
        csrf = {"X-CSRF-Token": api_json(page, room, "/api/me")["csrf_token"]}
        gone = files[1].read_bytes()
        files[1].unlink()
        assert page.request.post(room.base + "/api/worklist/refresh", headers=csrf).status == 200
        page.click("#open-together")
        e(page.locator("#toast")).to_contain_text("Cannot open these orders together: 0 worklist entries match")
        assert api_json(page, room, "/api/exam")["open"] is False
        files[1].write_bytes(gone)  # ... and has it again
        page.click("#refresh")
        e(second).to_be_checked()  # the selection survived

        page.click("#open-together")
        orders = page.locator("#exam-orders .order")
        e(orders).to_have_count(2)
        e(orders.nth(0)).to_have_text("Acc ACCGROUP1 · Chest PA")
        e(orders.nth(1)).to_have_text("Acc ACCGROUP2 · Ribs right")
        e(page.locator("#patient-name")).to_have_text("Gruppe, Greta")
        e(page.locator("#reopened")).to_have_count(0)
        e(page.locator("input.pick:checked")).to_have_count(0)  # the selection is used up
        page.select_option("#protocol", label="Chest PA")
        page.keyboard.press("Escape")
        page.keyboard.press("r")
        e(page.locator("#armed-state")).to_have_text("released")
        grouped, _ = expose(room, page, 0)
        room.shot(page, "cases-2-group-exposed")
        page.click("#close-exam")
        e(page.locator("#banner")).to_contain_text("No exam open")

        # the append case: reopen it from the list of exams closed since start-up
        page.click("#reopen summary")
        row = page.locator(f".closed-row[data-study-uid='{FIRST_STUDY}']")
        e(row).to_contain_text("Gruppe, Greta")
        e(row).to_contain_text("Acc ACCGROUP1")
        e(row).to_contain_text("Acc ACCGROUP2")
        room.shot(page, "cases-3-reopen-list")
        row.locator("button.reopen-button").click()
        e(page.locator("#reopened")).to_have_text("Reopened: adds series 2")
        e(page.locator("#exam-orders .order")).to_have_count(2)
        page.select_option("#protocol", label="Chest lateral")
        page.keyboard.press("Escape")
        page.keyboard.press("r")
        e(page.locator("#armed-state")).to_have_text("released")
        appended, _ = expose(room, page, 0)  # the reopened exam starts without images
        room.shot(page, "cases-4-appended-exposed")
        page.click("#close-exam")
        e(page.locator("#banner")).to_contain_text("No exam open")
    finally:
        if page.request.get(room.base + "/api/exam").json().get("open"):  # leave the room as found
            csrf = {"X-CSRF-Token": api_json(page, room, "/api/me")["csrf_token"]}
            page.request.post(room.base + "/api/exam/close", headers=csrf,
                              data={"completed": False, "reason": "test failed"})
        context.close()

    a = archived_file(room, grouped, tmp_path, dciodvfy)
    b = archived_file(room, appended, tmp_path, dciodvfy)
    assert [str(r.AccessionNumber) for r in a.RequestAttributesSequence] == ["ACCGROUP1", "ACCGROUP2"]
    assert [str(r.RequestedProcedureID) for r in a.RequestAttributesSequence] == ["RPG1", "RPG2"]
    assert (str(a.PatientID), str(a.PatientName)) == (PATIENT_ID, PATIENT)
    assert a.StudyInstanceUID == b.StudyInstanceUID == FIRST_STUDY
    assert a.SeriesInstanceUID != b.SeriesInstanceUID
    assert (int(a.SeriesNumber), int(b.SeriesNumber)) == (1, 2)
    assert (a.ViewPosition, b.ViewPosition) == ("PA", "LL")
    journal = room.daemon.journal()
    for canary in (PATIENT, "Gruppe", PATIENT_ID, "ACCGROUP"):
        assert canary not in journal, f"patient data {canary!r} in the daemon's log"
