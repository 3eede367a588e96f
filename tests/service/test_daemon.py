"""`dxgate run` as a whole: the daemon with its API over real HTTP, log-ins and roles, an
exposure through the software trigger into DCMTK storescp, metrics, reload and stop.

The daemon runs in this process on a thread (the simulated panel is injected as a pyusb
backend; the generator is the simulator's pty), so the test drives it exactly through its
API and its stop/reload requests — what SIGTERM and SIGHUP enqueue.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.errors import InvalidDicomError

from gateway.config import (
    ApiConfig,
    CalibrationConfig,
    Config,
    DestinationConfig,
    DetectorConfig,
    GeneratorConfig,
    ReviewConfig,
    SpoolConfig,
    WorklistConfig,
    load,
    to_toml,
)
from gateway.service.daemon import Daemon
from gateway.users import UserStore
from hw_sim.room import SimRoom
from tests.peers import StoreSCP, free_port

PASSWORD = "correct horse battery"


class Running:
    def __init__(self, daemon: Daemon, thread: threading.Thread, result: list[int]) -> None:
        self.daemon, self.thread, self.result = daemon, thread, result
        self.base = f"http://127.0.0.1:{daemon.api_port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30)

    def stop(self) -> int:
        self.daemon.request("stop")
        self.thread.join(60)
        assert not self.thread.is_alive(), "the daemon did not stop within its bound"
        return self.result[0]


def write_config(tmp_path: Path, room: SimRoom, pacs: StoreSCP, extra_dest: DestinationConfig | None = None,
                 ris_port: int | None = None) -> Path:
    dests = (DestinationConfig(name="dcmtk", port=pacs.port, called_ae=pacs.aet),)
    if extra_dest is not None:
        dests += (extra_dest,)
    cfg = Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode="8x8"),
                 generator=GeneratorConfig(port=room.start_generator()),
                 calibration=CalibrationConfig(dark_frames=4, flat_frames=4),
                 worklist=WorklistConfig(port=ris_port or free_port(), timeout_s=1.0), spool=SpoolConfig(min_free_mb=0),
                 api=ApiConfig(port=0), destinations=dests,
                 review=ReviewConfig(hold_s=0))  # each image goes at once: these tests wait for it at the archive
    path = tmp_path / "dxgate.toml"
    path.write_text(to_toml(cfg))
    return path


def start(path: Path, room: SimRoom) -> Running:
    ready = threading.Event()
    daemon = Daemon(path, usb_backend=room.usb_backend(), on_ready=lambda d: ready.set())
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
    thread.start()
    assert ready.wait(30), "the daemon never became ready"
    return Running(daemon, thread, result)


def users(path: Path, room: SimRoom) -> None:
    from gateway.config import load
    cfg = load(path)
    Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
    store = UserStore(cfg.path(cfg.spool.database))
    for name, role in (("tina", "technologist"), ("eric", "engineer"), ("ada", "admin")):
        store.add(name, role, PASSWORD)
    store.close()


def login(c: httpx.Client, name: str) -> dict[str, Any]:
    r = c.post("/api/login", json={"user": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def test_roles_sessions_and_csrf(tmp_path: Path, room: SimRoom, storescp: StoreSCP) -> None:
    path = write_config(tmp_path, room, storescp)
    users(path, room)
    run = start(path, room)
    try:
        with run.client() as anon:
            assert anon.get("/api/status").status_code == 401  # no session
            assert anon.post("/api/calibration").status_code == 401
            assert anon.post("/api/login", content=b"user=tina&password=x",
                             headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 415
        with run.client() as tech:
            csrf = login(tech, "tina")
            assert tech.get("/api/status").status_code == 200
            assert tech.post("/api/calibration", headers=csrf).status_code == 403  # engineers calibrate
            assert tech.post("/api/exam", json={}).status_code == 403  # no CSRF token
            assert tech.post("/api/exam", json={}, headers={"X-CSRF-Token": "forged"}).status_code == 403
            assert tech.post("/api/exam", json={}, headers=csrf).status_code == 200
        with run.client() as again:
            set_cookie = again.post("/api/login", json={"user": "tina", "password": PASSWORD}).headers["set-cookie"]
            flags = {f.strip().lower() for f in set_cookie.split(";")[1:]}
            assert {"httponly", "samesite=strict", "path=/"} <= flags, set_cookie
        with run.client() as mallory:
            for _ in range(5):
                r = mallory.post("/api/login", json={"user": "eric", "password": "wrong password!"})
            assert r.status_code == 423 and "locked" in r.json()["detail"]
            assert mallory.post("/api/login", json={"user": "eric", "password": PASSWORD}).status_code == 423
        with run.client() as admin:
            admin_csrf = login(admin, "ada")
            assert admin.post("/api/kept/reprocess", headers=admin_csrf).status_code == 200  # a privileged action
            trail = admin.get("/api/audit").json()  # the audit trail: newest first
            seen = {(r["event"], r["user"], r["outcome"]) for r in trail}
            assert {("Application Start", "", 0), ("Login", "tina", 0), ("Login", "eric", 4), ("Login", "eric", 8),
                    ("User Security Attributes Changed", "eric", 8), ("Login", "ada", 0)} <= seen, seen
            # privileged actions, done and refused, are audited; a technologist's own work is not one
            restricted = {(r["user"], r["outcome"]) for r in trail if r["event"] == "Use of Restricted Function"}
            assert restricted == {("tina", 4), ("ada", 0)}, restricted
        with run.client() as tech:
            login(tech, "tina")
            assert tech.get("/api/audit").status_code == 403  # only admins read the audit trail
    finally:
        assert run.stop() == 0


def test_an_exposure_through_the_api_reaches_the_archive_and_the_metrics(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP) -> None:
    path = write_config(tmp_path, room, storescp)
    users(path, room)
    run = start(path, room)
    try:
        with run.client() as eng:
            csrf = login(eng, "eric")
            room.place("open")
            assert eng.post("/api/calibration", headers=csrf).status_code == 200
            for _ in range(300):
                state = eng.get("/api/calibration").json()
                if state["state"] != "running":
                    break
                threading.Event().wait(0.1)  # polling the API as the console would
            assert state["state"] == "done", state
            room.place("chest")
            assert eng.post("/api/exam", json={}, headers=csrf).status_code == 200
            assert eng.post("/api/exam/view", json={"body_part": "HAND", "view_position": "PA", "laterality": "L",
                                                    "kvp": 55, "mas": 2}, headers=csrf).status_code == 200
            assert eng.post("/api/exam/expose", headers=csrf).status_code == 409  # not armed: no dose
            pulses = len(room.pulses)
            assert eng.post("/api/exam/arm", json={"armed": True}, headers=csrf).status_code == 200
            r = eng.post("/api/exam/expose", headers=csrf)
            assert r.status_code == 200, r.text
            uid = r.json()["sop_instance_uid"]
            assert len(room.pulses) == pulses + 1
            png = eng.get(f"/api/exam/images/{uid}/preview.png")
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
            exam = eng.get("/api/exam").json()
            assert exam["images"][0]["sop_instance_uid"] == uid and exam["images"][0]["exposure_index"] > 0
            assert eng.post(f"/api/exam/images/{uid}/review", json={"status": "rejected"},
                            headers=csrf).status_code == 400  # a rejection needs a reason
            assert eng.post("/api/exam/close", json={"completed": True}, headers=csrf).status_code == 200
            [stored] = wait_for_files(lambda: of_modality(storescp.files(), "DX"), 1)  # the dose report follows
            ds = pydicom.dcmread(stored)
            assert ds.SOPInstanceUID == uid and ds.BodyPartExamined == "HAND" and ds.ImageLaterality == "L"
            assert str(ds.OperatorsName) == "eric"  # who opened the exam at the console
            assert ds.PerformedProcedureStepID.startswith("P") and len(ds.PerformedProcedureStepID) <= 16
            metrics = {s.name: s for f in text_string_to_metric_families(eng.get("/metrics").text) for s in f.samples}
            assert metrics["dxgate_frames_dropped_total"].value == 0
            depth = {s.labels["queue"]: s.value for f in text_string_to_metric_families(eng.get("/metrics").text)
                     for s in f.samples if s.name == "dxgate_stage_queue_depth"}
            assert depth == {"kept_frames": 0, "frames_in_memory": 0}  # the kept raw frame went once imaged
            assert "dxgate_queue_deliveries" in metrics and "dxgate_stage_heartbeat_age_seconds" in metrics
    finally:
        assert run.stop() == 0


def wait_for_files(files: Any, n: int, timeout_s: float = 30.0) -> list[Path]:
    """The archive's own view: poll its folder (it offers no event) until n files are there."""
    done = threading.Event()
    deadline = threading.Timer(timeout_s, done.set)
    deadline.start()
    try:
        while not done.is_set() and len(files()) < n:
            done.wait(0.1)
    finally:
        deadline.cancel()
    got = list(files())
    assert len(got) >= n, f"{len(got)} of {n} files arrived"
    return got


def of_modality(files: list[Path], modality: str) -> list[Path]:
    """The complete files of one modality (a file still being written is not counted yet)."""
    out = []
    for path in files:
        try:
            if pydicom.dcmread(path, stop_before_pixels=True).Modality == modality:
                out.append(path)
        except (OSError, ValueError, AttributeError, EOFError, InvalidDicomError):  # a file cut short
            continue
    return out


def calibrate_and_arm(c: httpx.Client, csrf: dict[str, Any], room: SimRoom) -> None:
    room.place("open")
    assert c.post("/api/calibration", headers=csrf).status_code == 200
    state: dict[str, Any] = {}
    for _ in range(600):
        state = c.get("/api/calibration").json()
        if state["state"] != "running":
            break
        threading.Event().wait(0.1)
    assert state["state"] == "done", state
    room.place("chest")
    assert c.post("/api/exam", json={}, headers=csrf).status_code == 200
    assert c.post("/api/exam/view", json={"body_part": "CHEST", "view_position": "PA", "kvp": 80, "mas": 1.2},
                  headers=csrf).status_code == 200
    assert c.post("/api/exam/arm", json={"armed": True}, headers=csrf).status_code == 200


def test_reload_adds_a_destination_and_a_broken_file_keeps_the_running_one(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP) -> None:
    from gateway.peers import StorageServer

    path = write_config(tmp_path, room, storescp)
    users(path, room)
    second = StorageServer(tmp_path / "second", ae_title="SECOND")
    second_port = second.start()
    run = start(path, room)
    try:
        good = path.read_text()
        # a broken file: the running configuration stays, and says why
        path.write_text(good + '\n[[destinations]]\nname = "x"\ncalled_ae = "' + "X" * 20 + '"\n')
        run.daemon.reloaded.clear()
        run.daemon.request("reload")
        assert run.daemon.reloaded.wait(30)
        assert run.daemon.last_reload.startswith("refused: ") and "called_ae" in run.daemon.last_reload
        assert [d.name for d in run.daemon.config.destinations] == ["dcmtk"]
        # a good file with a second archive: the next image goes there too
        path.write_text(good + f'\n[[destinations]]\nname = "second"\nport = {second_port}\n'
                        'called_ae = "SECOND"\n')
        run.daemon.reloaded.clear()
        run.daemon.request("reload")
        assert run.daemon.reloaded.wait(30) and run.daemon.last_reload.startswith("applied")
        with run.client() as eng:
            csrf = login(eng, "eric")
            calibrate_and_arm(eng, csrf, room)
            uid = eng.post("/api/exam/expose", headers=csrf).json()["sop_instance_uid"]
        assert [pydicom.dcmread(p).SOPInstanceUID for p in wait_for_files(storescp.files, 1)] == [uid]
        assert [p.name for p in wait_for_files(lambda: list((tmp_path / "second").glob("*.dcm")), 1)] == [
            f"{uid}.dcm"]
    finally:
        assert run.stop() == 0
        second.stop()


def test_no_patient_data_in_any_log_line_of_the_whole_daemon(tmp_path: Path, room: SimRoom, storescp: StoreSCP,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Canary patient data through worklist, exam, exposure, API, forwarding and an error path."""
    from datetime import UTC, datetime

    from gateway.peers import WorklistServer, make_worklist_entry

    canaries = ("Canary^Tweety", "CANARYPID77", "19230405", "CANACC77")
    ris = WorklistServer([make_worklist_entry(
        patient_name=canaries[0], patient_id=canaries[1], birth_date=canaries[2], sex="F", accession=canaries[3],
        study_uid="1.2.826.0.1.3680043.10.999.77", requested_procedure_id="RP77", sps_id="SPS77",
        sps_description="Chest PA", station_ae="DXGATE", start=datetime.now(UTC))], ae_title="RIS")
    ris_port = ris.start()
    path = write_config(tmp_path, room, storescp, extra_dest=DestinationConfig(name="down", port=free_port(),
                                                                                called_ae="DOWN"), ris_port=ris_port)
    users(path, room)
    caplog.set_level("DEBUG")
    run = start(path, room)
    try:
        with run.client() as eng:
            csrf = login(eng, "eric")
            listing = eng.get("/api/worklist").json()
            assert [i["patient_id"] for i in listing["items"]] == [canaries[1]]  # the API shows it ...
            room.place("open")
            eng.post("/api/calibration", headers=csrf)
            for _ in range(600):
                if eng.get("/api/calibration").json()["state"] != "running":
                    break
                threading.Event().wait(0.1)
            room.place("chest")
            assert eng.post("/api/exam", json={"accession_number": canaries[3]}, headers=csrf).status_code == 200
            eng.post("/api/exam/view", json={"body_part": "CHEST", "view_position": "PA", "kvp": 80, "mas": 1.2},
                     headers=csrf)
            eng.post("/api/exam/arm", json={"armed": True}, headers=csrf)
            uid = eng.post("/api/exam/expose", headers=csrf).json()["sop_instance_uid"]
            eng.post("/api/exam/images/nope/review", json={"status": "accepted"}, headers=csrf)  # an error path
            eng.get("/api/worklist", params={"patient_id": canaries[1]})  # a search by the canary itself
        ds = pydicom.dcmread(wait_for_files(storescp.files, 1)[0])
        assert ds.SOPInstanceUID == uid and ds.PatientName == canaries[0]  # ... the object holds it ...
    finally:
        assert run.stop() == 0
        ris.stop()
    # every logger of the daemon's process; httpx's are this test's client (its request lines quote URLs)
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                     if not r.name.startswith(("httpx", "httpcore")))
    assert "saved" in text and "down" in text  # the events are logged ...
    for canary in canaries:
        assert canary not in text, f"{canary} reached a log line"  # ... the patient is not



def test_the_panels_own_status_and_an_over_temperature_alarm_reach_the_console(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP) -> None:
    """The simulated panel heats beyond its limit: /api/status shows it (the panel's own view),
    an alarm says why exposures are refused, and it clears once the panel has cooled."""
    from tests.service.processes import until

    path = write_config(tmp_path, room, storescp)
    users(path, room)
    cfg = load(path)
    path.write_text(to_toml(cfg.model_copy(update={"service": cfg.service.model_copy(update={"heartbeat_s": 0.2})})))
    run = start(path, room)
    try:
        with run.client() as tech:
            login(tech, "tina")
            panel = tech.get("/api/status").json()["detector"]["panel"]
            assert panel["state"] == "idle" and not panel["over_temperature"]
            assert panel["temperature_c"] == pytest.approx(room.temperature_c, abs=0.2)
            room.set_temperature(room.panel.max_temperature_c + 5)
            until(lambda: any(a["code"] == "detector-not-ready" for a in tech.get("/api/alarms").json()))
            panel = tech.get("/api/status").json()["detector"]["panel"]
            assert panel["over_temperature"] and "over temperature" in panel["error"]
            room.set_temperature(room.panel.max_temperature_c - 10)
            until(lambda: not any(a["code"] == "detector-not-ready" for a in tech.get("/api/alarms").json()))
    finally:
        assert run.stop() == 0
