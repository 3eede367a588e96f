"""The append case across a daemon restart (issue 11): exams closed before `dxgate run` stopped are
still in the Reopen list after it starts again, and reopening one adds a series to the same study
(the next Series Number) under a new procedure step, exactly as without the restart.

Processes as a hospital runs them: the simulator, `dxgate run` (stopped by SIGTERM, started
again), DCMTK storescp as the archive, an MPPS SCP and the embedded worklist server as the RIS.
The truth is the archive's received files (checked by dciodvfy) and the MPPS SCP's own log —
never the daemon's answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pydicom
import pytest

from gateway.config import (
    ApiConfig,
    CalibrationConfig,
    Config,
    DestinationConfig,
    DetectorConfig,
    GeneratorConfig,
    MppsConfig,
    SpoolConfig,
    WorklistConfig,
    to_toml,
)
from gateway.peers import WorklistServer, make_worklist_entry
from tests.mpps_scp import MppsScp
from tests.peers import StoreSCP, free_port
from tests.service.processes import DaemonProcess, SimProcess, add_user, calibrate, login, until

pytestmark = pytest.mark.peers

PATIENT, PATIENT_ID, ACCESSION = "Wieder^Wanda", "PID-REOPEN-11", "ACC-REOPEN-11"
STUDY = "1.2.826.0.1.3680043.10.999.1111"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
VIEW = {"body_part": "CHEST", "kvp": 80, "mas": 1.2}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    s = SimProcess(tmp_path / "sim").start("--seed", "11")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def mpps() -> Iterator[MppsScp]:
    peer = MppsScp().start()
    yield peer
    peer.stop()


def exposed(c: httpx.Client, csrf: dict[str, str], view_position: str) -> str:
    """Choose the view, arm, expose (software trigger), return the saved image's UID."""
    assert c.post("/api/exam/view", json={**VIEW, "view_position": view_position}, headers=csrf).status_code == 200
    assert c.post("/api/exam/arm", json={"armed": True}, headers=csrf).status_code == 200
    r = c.post("/api/exam/expose", headers=csrf)
    assert r.status_code == 200, r.text
    uid = str(r.json()["sop_instance_uid"])
    assert c.post("/api/exam/close", json={"completed": True}, headers=csrf).status_code == 200
    return uid


def test_an_exam_closed_before_a_restart_is_reopened_into_the_same_study_and_the_next_series(
        tmp_path: Path, sim: SimProcess, storescp: StoreSCP, mpps: MppsScp,
        dciodvfy: Callable[[Path | str], None]) -> None:
    ris = WorklistServer([make_worklist_entry(
        patient_name=PATIENT, patient_id=PATIENT_ID, birth_date="19750607", sex="F", accession=ACCESSION,
        study_uid=STUDY, requested_procedure_id="RP11", sps_id="SPS11", sps_description="Chest",
        station_ae="DXGATE", start=datetime.now(UTC))], ae_title="RIS")
    config, api_port = tmp_path / "dxgate.toml", free_port()
    config.write_text(to_toml(Config(
        state_dir=str(tmp_path / "state"),
        detector=DetectorConfig(mode="8x8", usb_backend="socket", backend_options={"path": sim.info["usb_socket"]}),
        generator=GeneratorConfig(port=sim.info["generator_port"]),
        calibration=CalibrationConfig(dark_frames=4, flat_frames=4),
        worklist=WorklistConfig(port=ris.start(), called_ae="RIS", timeout_s=5.0),
        mpps=MppsConfig(enabled=True, port=mpps.port, timeout_s=5),
        spool=SpoolConfig(min_free_mb=0), api=ApiConfig(port=api_port),
        destinations=(DestinationConfig(name="dcmtk", port=storescp.port, called_ae=storescp.aet),))))
    add_user(config, "eric", "engineer")
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    daemon = DaemonProcess(config, api_port, tmp_path).start()
    try:
        with daemon.client() as c:
            csrf = login(c, "eric")
            calibrate(c, csrf, sim)
            # an exam without patient (its study UID generated here: only the state database knows
            # it after the restart), then the scheduled order
            r = c.post("/api/exam", json={}, headers=csrf)
            assert r.status_code == 200, r.text
            generated_study = r.json()["study_uid"]
            before["generated"] = exposed(c, csrf, "PA")
            assert c.post("/api/exam", json={"accession_number": ACCESSION}, headers=csrf).status_code == 200
            before["scheduled"] = exposed(c, csrf, "PA")
        until(lambda: len(storescp.files()) == 4, what="two images and two dose reports at the archive")
        assert daemon.stop() == 0  # SIGTERM: a clean stop, as systemd does

        daemon = DaemonProcess(config, api_port, tmp_path).start()
        with daemon.client() as c:
            csrf = login(c, "eric")
            listed = c.get("/api/exam/closed").json()
            assert [x["study_uid"] for x in listed] == [STUDY, generated_study]  # newest first
            for key, study in (("generated", generated_study), ("scheduled", STUDY)):
                r = c.post("/api/exam", json={"reopen_study_uid": study}, headers=csrf)
                assert r.status_code == 200, r.text
                after[key] = exposed(c, csrf, "LL")
        until(lambda: len(storescp.files()) == 8, what="the appended images and their dose reports at the archive")
        until(lambda: len(mpps.log) == 8, what="four procedure steps, each created and completed, at the RIS")
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        ris.stop()

    archived = {str(d.SOPInstanceUID): (d, p) for p in storescp.files() if (d := pydicom.dcmread(p))}
    for key in ("generated", "scheduled"):
        (a, a_path), (b, b_path) = archived[before[key]], archived[after[key]]
        dciodvfy(a_path)
        dciodvfy(b_path)
        assert a.SOPClassUID == b.SOPClassUID == DX
        assert a.StudyInstanceUID == b.StudyInstanceUID
        assert a.SeriesInstanceUID != b.SeriesInstanceUID
        assert (int(a.SeriesNumber), int(b.SeriesNumber)) == (1, 2)
        assert (a.PatientID, a.AccessionNumber) == (b.PatientID, b.AccessionNumber)  # the same order
        assert (a.ViewPosition, b.ViewPosition) == ("PA", "LL")
        # a new procedure step: its own MPPS, created and completed at the RIS, naming the new image
        step_a = a.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID
        step_b = b.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID
        assert step_a != step_b
        step = mpps.steps[str(step_b)]
        assert step.PerformedProcedureStepStatus == "COMPLETED"
        assert [str(r.ReferencedSOPInstanceUID) for s in step.PerformedSeriesSequence
                for r in s.ReferencedImageSequence] == [str(b.SOPInstanceUID)]
    assert archived[before["scheduled"]][0].StudyInstanceUID == STUDY
    assert archived[after["scheduled"]][0].AccessionNumber == ACCESSION
    assert archived[after["generated"]][0].StudyInstanceUID == generated_study
    assert archived[after["scheduled"]][0].PatientName == PATIENT
    assert mpps.refusals == [] and [k for k, _, _ in mpps.log] == ["create", "set"] * 4
    journal = daemon.journal()
    for canary in (PATIENT, "Wieder", PATIENT_ID, ACCESSION):
        assert canary not in journal, f"patient data {canary!r} in the daemon's log"
