"""Every console tab follows the exam cases (issue 11), in real Chromium against `dxgate run`: a group
opened and a closed exam reopened in one tab show in a second tab of the same browser without
reloading it (the daemon's `exam` event on the SSE stream), and in a tab opened afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.peers import make_worklist_entry, worklist_file_bytes
from tests.console.conftest import Room
from tests.console.test_console import api_json, expect, log_in

pytestmark = pytest.mark.peers

PATIENT, PATIENT_ID = "Zweitab^Zora", "PIDTABS11"
ORDERS = (("ACCTABS1", "RPT1", "Chest PA", "1.2.826.0.1.3680043.10.999.1101"),
          ("ACCTABS2", "RPT2", "Ribs left", "1.2.826.0.1.3680043.10.999.1102"))
STUDY = ORDERS[0][3]  # a group's images go into its first order's study


def post(page: Any, room: Room, path: str, body: dict[str, Any]) -> None:
    csrf = {"X-CSRF-Token": api_json(page, room, "/api/me")["csrf_token"]}
    r = page.request.post(room.base + path, headers=csrf, data=body)
    assert r.status == 200, r.text()


def test_a_group_and_a_reopen_show_in_every_tab_without_reloading(room: Room, browser: Any) -> None:
    e = expect()
    for accession, rp, description, study in ORDERS:
        (room.orthanc.worklist_dir / f"{accession}.wl").write_bytes(worklist_file_bytes(make_worklist_entry(
            patient_name=PATIENT, patient_id=PATIENT_ID, birth_date="19800304", sex="F", accession=accession,
            study_uid=study, requested_procedure_id=rp, sps_id=f"S{rp}", sps_description=description,
            station_ae="DXGATE", start=datetime.now(UTC))))
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    first = context.new_page()
    try:
        log_in(first, room, "tina")
        second = context.new_page()  # the same log-in (cookie), its own page and event stream
        second.goto(room.base + "/console/tech.html")
        second.wait_for_selector("body[data-ready='1']")
        second.evaluate("window.dxSameDocument = true")  # gone if the page were reloaded
        e(second.locator("#banner")).to_contain_text("No exam open")

        post(first, room, "/api/worklist/refresh", {})
        post(first, room, "/api/exam", {"group": [{"accession_number": o[0]} for o in ORDERS]})
        orders = second.locator("#exam-orders .order")
        e(orders).to_have_count(2)
        e(orders.nth(1)).to_have_text("Acc ACCTABS2 · Ribs left")
        e(second.locator("#reopened")).to_have_count(0)  # a new exam is no reopened one
        first.click("#close-exam")
        e(second.locator("#banner")).to_contain_text("No exam open")

        first.click("#reopen summary")
        first.locator(f".closed-row[data-study-uid='{STUDY}'] button.reopen-button").click()
        e(first.locator("#reopened")).to_have_text("Reopened: adds series 2")
        e(second.locator("#reopened")).to_have_text("Reopened: adds series 2")  # told, not reloaded
        e(second.locator("#exam-orders .order")).to_have_count(2)
        assert second.evaluate("window.dxSameDocument") is True
        room.shot(second, "reopen-second-tab")
        third = context.new_page()  # a console opened later asks the daemon, which knows
        third.goto(room.base + "/console/tech.html")
        e(third.locator("#reopened")).to_have_text("Reopened: adds series 2")

        first.click("#close-exam")
        for page in (second, third):
            e(page.locator("#banner")).to_contain_text("No exam open")
            e(page.locator("#reopened")).to_have_count(0)
    finally:
        if api_json(first, room, "/api/exam").get("open"):  # leave the room as found
            post(first, room, "/api/exam/close", {"completed": False, "reason": "test failed"})
        context.close()
    journal = room.daemon.journal()
    for canary in (PATIENT, "Zweitab", PATIENT_ID, "ACCTABS"):
        assert canary not in journal, f"patient data {canary!r} in the daemon's log"
