"""MPPS through the daemon, against a strict Annex F SCP (tests/mpps_scp.py): N-CREATE at the
first image, one N-SET at closing with the kept images and the dose of every exposure; queued
durably while the RIS is down (across a restart) and sent in order; a refusal stops the step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from gateway.config import MppsConfig, load, to_toml
from hw_sim.room import SimRoom
from tests.mpps_scp import MppsScp
from tests.peers import StoreSCP, free_port
from tests.service.processes import until
from tests.service.test_daemon import calibrate_and_arm, login, start, users, wait_for_files, write_config


@pytest.fixture
def scp() -> Iterator[MppsScp]:
    peer = MppsScp().start()
    yield peer
    peer.stop()


def with_mpps(tmp_path: Path, room: SimRoom, storescp: StoreSCP, port: int) -> Path:
    path = write_config(tmp_path, room, storescp)
    cfg = load(path)
    path.write_text(to_toml(cfg.model_copy(update={"mpps": MppsConfig(enabled=True, port=port, timeout_s=5)})))
    users(path, room)
    return path


def expose(c: httpx.Client, csrf: dict[str, Any]) -> str:
    r = c.post("/api/exam/expose", headers=csrf)
    assert r.status_code == 200, r.text
    return str(r.json()["sop_instance_uid"])


def test_a_completed_step_lists_its_kept_images_and_every_exposures_dose(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP, scp: MppsScp) -> None:
    run = start(with_mpps(tmp_path, room, storescp, scp.port), room)
    try:
        with run.client() as eng:
            csrf = login(eng, "eric")
            calibrate_and_arm(eng, csrf, room)
            pulses = len(room.pulses)
            kept, rejected = expose(eng, csrf), expose(eng, csrf)
            until(lambda: [k for k, _, _ in scp.log] == ["create"])  # at the first image, not at closing
            assert eng.post(f"/api/exam/images/{rejected}/review", json={"status": "rejected", "reason": "motion"},
                            headers=csrf).status_code == 200
            assert eng.post("/api/exam/close", json={"completed": True}, headers=csrf).status_code == 200
            until(lambda: len(scp.log) == 2)
        assert scp.refusals == []
        (_, uid, created), (_, set_uid, final) = scp.log
        assert set_uid == uid and created.PerformedProcedureStepStatus == "IN PROGRESS"
        step = scp.steps[uid]  # the SCP's own view of the step
        assert step.PerformedProcedureStepStatus == "COMPLETED"
        [series] = [s for s in step.PerformedSeriesSequence if s.ReferencedImageSequence]
        assert [r.ReferencedSOPInstanceUID for r in series.ReferencedImageSequence] == [kept]  # not the rejected
        assert str(series.OperatorsName) == "eric"
        exposures = len(room.pulses) - pulses  # the simulator's count of pulses given
        assert step.TotalNumberOfExposures == exposures == 2 and len(step.ExposureDoseSequence) == 2
        stored = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in wait_for_files(storescp.files, 2)}
        ref = stored[kept].ReferencedPerformedProcedureStepSequence[0]
        assert ref.ReferencedSOPInstanceUID == uid and ref.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.3"
        assert stored[kept].PerformedProcedureStepID == step.PerformedProcedureStepID
    finally:
        assert run.stop() == 0


def test_messages_wait_while_the_ris_is_down_even_across_a_restart_then_arrive_in_order(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP) -> None:
    port = free_port()  # nobody listens yet
    path = with_mpps(tmp_path, room, storescp, port)
    run = start(path, room)
    with run.client() as eng:
        csrf = login(eng, "eric")
        calibrate_and_arm(eng, csrf, room)
        expose(eng, csrf)
        assert eng.post("/api/exam/close", json={"completed": False, "reason": "patient-refused"},
                        headers=csrf).status_code == 200
    gw = run.daemon.gateway
    assert gw is not None and gw.mpps is not None
    until(lambda: gw.mpps_sender is not None and bool(gw.mpps_sender.last_error))  # it tried and failed
    assert run.stop() == 0
    scp = MppsScp().start(port)
    try:
        run = start(path, room)  # a new process's view: the queue is in the state database
        try:
            until(lambda: len(scp.log) == 2, timeout_s=60)  # the sender's backoff is bounded
        finally:
            assert run.stop() == 0
        assert [k for k, _, _ in scp.log] == ["create", "set"] and scp.refusals == []
        step = scp.steps[scp.log[0][1]]
        assert step.PerformedProcedureStepStatus == "DISCONTINUED"
        reason = step.PerformedProcedureStepDiscontinuationReasonCodeSequence[0]
        assert (reason.CodeValue, reason.CodingSchemeDesignator) == ("110505", "DCM")  # patient refused
    finally:
        scp.stop()


def test_a_refused_create_holds_the_steps_set_and_raises_an_alarm(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP, scp: MppsScp) -> None:
    scp.refuse_create_with = 0x0120
    run = start(with_mpps(tmp_path, room, storescp, scp.port), room)
    try:
        with run.client() as eng:
            csrf = login(eng, "eric")
            calibrate_and_arm(eng, csrf, room)
            expose(eng, csrf)
            until(lambda: len(scp.refusals) == 1)
            assert eng.post("/api/exam/close", json={"completed": True}, headers=csrf).status_code == 200
            alarms = eng.get("/api/alarms").json()
            until(lambda: any(a["code"] == "mpps-refused" for a in eng.get("/api/alarms").json()))
            gw = run.daemon.gateway
            assert gw is not None and gw.mpps is not None
            assert gw.mpps.due(time.time() + 86400) is None  # the step's set is not due, whenever asked
            states = [(r.kind, r.state) for r in gw.mpps.records()]
            assert states == [("create", "refused"), ("set", "pending")]  # the set waits, never sent alone
            assert scp.log == [] and alarms is not None
    finally:
        assert run.stop() == 0
