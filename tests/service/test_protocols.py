"""Anatomy and technique come from the room's protocol table, selected by the order's codes:
the worklist entry's Requested Procedure Code asks for a protocol, the console offers it first,
and the exposure is taken with its body part, view and technique — the simulator's generator
(its own record of the pulse) and the archive's copy are the truth."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest

from gateway.config import ConfigError, ProtocolConfig, from_dict, load, to_toml
from gateway.peers import WorklistServer, make_worklist_entry
from hw_sim.room import SimRoom
from tests.peers import StoreSCP
from tests.service.test_daemon import calibrate_and_arm, login, start, users, wait_for_files, write_config

KNEE = ProtocolConfig(name="Knee lateral", body_part="KNEE", view_position="LL", kvp=63, mas=4.0, target_ei=450,
                      codes=("99RIS:KNEE2",))


def test_the_orders_code_selects_the_protocol_and_its_technique_reaches_the_tube(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP) -> None:
    ris = WorklistServer([make_worklist_entry(
        patient_name="Knie^Karl", patient_id="P-KNEE", birth_date="19600101", sex="M", accession="ACC-KNEE",
        study_uid="1.2.826.0.1.3680043.10.999.88", requested_procedure_id="RP88", sps_id="SPS88",
        sps_description="Knie 2 Ebenen", station_ae="DXGATE", start=datetime.now(UTC),
        procedure_codes=[("KNEE2", "99RIS", "Knee two views")])], ae_title="RIS")
    path = write_config(tmp_path, room, storescp, ris_port=ris.start())
    cfg = load(path)
    path.write_text(to_toml(cfg.model_copy(update={"protocols": (*cfg.protocols, KNEE)})))
    users(path, room)
    run = start(path, room)
    try:
        with run.client() as eng:
            csrf = login(eng, "eric")
            calibrate_and_arm(eng, csrf, room)  # calibrates; its own unscheduled exam is closed next
            assert eng.post("/api/exam/close", json={"completed": True}, headers=csrf).status_code == 200
            assert eng.post("/api/exam", json={"accession_number": "ACC-KNEE"}, headers=csrf).status_code == 200
            offered = eng.get("/api/exam").json()["protocols"]
            assert offered[0]["name"] == "Knee lateral" and offered[0]["suggested"]
            assert [p["name"] for p in offered if p["suggested"]] == ["Knee lateral"]
            assert len(offered) == len(cfg.protocols) + 1  # the rest of the table stays available

            no_side = eng.post("/api/exam/view", json={"protocol": "Knee lateral"}, headers=csrf)
            assert no_side.status_code == 400 and "paired" in no_side.json()["detail"]
            unknown = eng.post("/api/exam/view", json={"protocol": "Elbow"}, headers=csrf)
            assert unknown.status_code == 400 and "no protocol named 'Elbow'" in unknown.json()["detail"]
            assert eng.post("/api/exam/view", json={"body_part": "KNEE"}, headers=csrf).status_code == 422

            chosen = eng.post("/api/exam/view", json={"protocol": "Knee lateral", "laterality": "R", "kvp": 66},
                              headers=csrf)
            assert chosen.status_code == 200, chosen.text
            assert eng.post("/api/exam/arm", json={"armed": True}, headers=csrf).status_code == 200
            pulses = len(room.pulses)
            r = eng.post("/api/exam/expose", headers=csrf)
            assert r.status_code == 200, r.text
            assert len(room.pulses) == pulses + 1
            kvp, mas, _ = room.pulses[-1]  # what the tube gave (the simulated generator: within 1 % / 2 %)
            assert kvp == pytest.approx(66, rel=0.011) and mas == pytest.approx(4.0, rel=0.021)
        ds = pydicom.dcmread(wait_for_files(storescp.files, 1)[0])
        assert (ds.BodyPartExamined, ds.ViewPosition, ds.ImageLaterality) == ("KNEE", "LL", "R")
        assert float(ds.TargetExposureIndex) == 450
        assert ds.ProcedureCodeSequence[0].CodeValue == "KNEE2"
    finally:
        assert run.stop() == 0
        ris.stop()


@pytest.mark.parametrize(("protocol", "message"), [
    ({"codes": ["KNEE2"]}, "write SCHEME:VALUE"),
    ({"body_part": "ELBOWS"}, "ELBOWS"),
    ({"view_position": "LAT"}, "view_position"),
    ({"kvp": 200}, "kvp"),
])
def test_a_bad_protocol_is_refused_naming_it(protocol: dict[str, object], message: str) -> None:
    base = {"name": "Knee lateral", "body_part": "KNEE", "view_position": "LL", "kvp": 63, "mas": 4.0}
    with pytest.raises(ConfigError, match=message):
        from_dict({"protocols": [{**base, **protocol}]})


def test_protocol_names_are_unique() -> None:
    same = {"name": "Chest PA", "body_part": "CHEST", "view_position": "PA", "kvp": 110, "mas": 2.0}
    with pytest.raises(ConfigError, match="protocol names must be unique: Chest PA"):
        from_dict({"protocols": [same, same]})
