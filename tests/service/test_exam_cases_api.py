"""The group and append cases (issue 8) reached through the daemon's API, as the console does:
several orders of one patient in one exam, and a closed exam reopened to add a view. The truth
is the archive's own files (DCMTK storescp) and dciodvfy."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pydicom

from gateway.peers import WorklistServer, make_worklist_entry
from hw_sim.room import SimRoom
from tests.peers import StoreSCP
from tests.service.test_daemon import calibrate_and_arm, login, start, users, wait_for_files, write_config

STUDY = "1.2.826.0.1.3680043.10.999.81"


def order(accession: str, rp: str, other_study: str = "") -> object:
    return make_worklist_entry(
        patient_name="Gruppe^Greta", patient_id="PID-81", birth_date="19700101", sex="F", accession=accession,
        study_uid=other_study or STUDY, requested_procedure_id=rp, sps_id=f"SPS-{rp}", sps_description=rp,
        station_ae="DXGATE", start=datetime.now(UTC))


def test_group_and_append_through_the_api(tmp_path: Path, room: SimRoom, storescp: StoreSCP,
                                          dciodvfy: Callable[[Path | str], None]) -> None:
    ris = WorklistServer([order("ACC-81A", "RP81A"), order("ACC-81B", "RP81B", STUDY + ".2")], ae_title="RIS")
    path = write_config(tmp_path, room, storescp, ris_port=ris.start())
    users(path, room)
    run = start(path, room)
    try:
        with run.client() as c:
            csrf = login(c, "eric")
            calibrate_and_arm(c, csrf, room)  # an unscheduled exam, to calibrate and check the path
            assert c.post("/api/exam/close", json={"completed": True}, headers=csrf).status_code == 200
            assert c.post("/api/exam", json={"group": [{"accession_number": "ACC-81A"},
                                                       {"accession_number": "ACC-81A"}]},
                          headers=csrf).status_code == 400  # the same order twice is no group
            r = c.post("/api/exam", json={"group": [{"accession_number": "ACC-81A"},
                                                    {"accession_number": "ACC-81B"}]}, headers=csrf)
            assert r.status_code == 200, r.text
            assert r.json()["study_uid"] == STUDY
            view = {"body_part": "CHEST", "view_position": "PA", "kvp": 80, "mas": 1.2}
            assert c.post("/api/exam/view", json=view, headers=csrf).status_code == 200
            assert c.post("/api/exam/arm", json={"armed": True}, headers=csrf).status_code == 200
            grouped = c.post("/api/exam/expose", headers=csrf).json()["sop_instance_uid"]
            assert c.post("/api/exam/close", json={"completed": True}, headers=csrf).status_code == 200

            closed = c.get("/api/exam/closed").json()
            assert closed[0]["study_uid"] == STUDY  # newest first
            assert c.post("/api/exam", json={"reopen_study_uid": STUDY, "accession_number": "ACC-81A"},
                          headers=csrf).status_code == 422  # one way of opening at a time
            assert c.post("/api/exam", json={"reopen_study_uid": STUDY}, headers=csrf).status_code == 200
            assert c.post("/api/exam/view", json={**view, "view_position": "LL"}, headers=csrf).status_code == 200
            assert c.post("/api/exam/arm", json={"armed": True}, headers=csrf).status_code == 200
            appended = c.post("/api/exam/expose", headers=csrf).json()["sop_instance_uid"]
            assert c.post("/api/exam/close", json={"completed": True}, headers=csrf).status_code == 200
        files = wait_for_files(storescp.files, 4)  # the grouped and the appended image, two dose reports
    finally:
        assert run.stop() == 0
        ris.stop()
    objects = {str(d.SOPInstanceUID): (d, p) for p in files if (d := pydicom.dcmread(p))}
    a, b = objects[grouped][0], objects[appended][0]
    for uid in (grouped, appended):
        dciodvfy(objects[uid][1])
    assert [r.AccessionNumber for r in a.RequestAttributesSequence] == ["ACC-81A", "ACC-81B"]
    assert a.StudyInstanceUID == b.StudyInstanceUID == STUDY
    assert a.SeriesInstanceUID != b.SeriesInstanceUID and (int(a.SeriesNumber), int(b.SeriesNumber)) == (1, 2)
    assert b.ViewPosition == "LL"
