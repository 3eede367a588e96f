"""The console's calibration through the daemon's API: a new set is kept pending, unused, with its
maps and QA figures as pictures, until an engineer accepts it (then the next image is corrected
with it) or discards it (the set in use stays). Technologists are refused; CSRF is required;
both decisions are audited. The truth is the archive's own file (DerivationDescription names the
calibration that corrected the image) and the audit trail, never the route's answer.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pydicom
import pytest

from gateway.config import load
from gateway.correction import CalibrationStore
from hw_sim.room import SimRoom
from tests.peers import StoreSCP, dciodvfy_errors
from tests.service.test_daemon import login, start, users, wait_for_files, write_config


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """The in-process daemon sets the root logger's level; later tests count log records."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=5) as sim:
        yield sim


def calibrate(c: httpx.Client, csrf: dict[str, Any], *, pending: bool) -> dict[str, Any]:
    r = c.post("/api/calibration", json={"pending": pending}, headers=csrf)
    assert r.status_code == 200, r.text
    state: dict[str, Any] = {}
    for _ in range(600):
        state = c.get("/api/calibration").json()
        if state["state"] != "running":
            break
        threading.Event().wait(0.1)  # polling the API as the console does
    assert state["state"] == "done", state
    return state


def expose(c: httpx.Client, csrf: dict[str, Any], room: SimRoom, storescp: StoreSCP, n: int) -> str:
    """One image through the software trigger; the calibration id its archived file names."""
    room.place("chest")
    assert c.post("/api/exam", json={}, headers=csrf).status_code == 200
    assert c.post("/api/exam/view", json={"body_part": "CHEST", "view_position": "PA", "kvp": 80, "mas": 1.2},
                  headers=csrf).status_code == 200
    assert c.post("/api/exam/arm", json={"armed": True}, headers=csrf).status_code == 200
    r = c.post("/api/exam/expose", headers=csrf)
    assert r.status_code == 200, r.text
    uid = r.json()["sop_instance_uid"]
    assert c.post(f"/api/exam/images/{uid}/review", json={"status": "accepted"}, headers=csrf).status_code == 200
    assert c.post("/api/exam/close", json={"completed": True}, headers=csrf).status_code == 200
    files = wait_for_files(storescp.files, n)
    [path] = [f for f in files if pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID == uid]
    assert dciodvfy_errors(path) == []
    found = re.match(r"calibration (\S+) of ", str(pydicom.dcmread(path, stop_before_pixels=True)
                                                   .DerivationDescription))
    assert found is not None
    return found.group(1)


def pictures(c: httpx.Client, pending: dict[str, Any]) -> None:
    """Each picture is a small PNG; the defect map shows the panel's defects."""
    for name, url in pending["pictures"].items():
        r = c.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", name
        img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img is not None and max(img.shape[:2]) <= 800, name
        if name in ("offset", "gain"):
            assert img.ndim == 2 and int(img.max()) - int(img.min()) > 100, f"{name} map not windowed"
        if name == "defects":
            assert np.count_nonzero(img.max(axis=2)) > 0  # coloured defect pixels on black


def test_pending_set_is_used_only_once_accepted(tmp_path: Path, room: SimRoom, storescp: StoreSCP) -> None:
    path = write_config(tmp_path, room, storescp)
    users(path, room)
    cfg = load(path)
    run = start(path, room)
    try:
        with run.client() as eng, run.client() as tech, run.client() as adm:
            csrf, tcsrf = login(eng, "eric"), login(tech, "tina")
            login(adm, "ada")
            room.place("open")
            first = calibrate(eng, csrf, pending=False)["calibration_id"]  # the set in use
            assert expose(eng, csrf, room, storescp, 1) == first

            room.place("open")
            state = calibrate(eng, csrf, pending=True)
            pending = state["pending"]
            new = pending["calibration_id"]
            assert new == state["calibration_id"] and new != first
            assert eng.get("/api/status").json()["calibration"]["calibration_id"] == first
            qa = pending["qa"]
            assert qa["flats"] == cfg.calibration.qa_flat_frames
            names = {c["name"] for c in qa["checks"]}
            assert {"global signal nonuniformity", "local signal nonuniformity", "defect fraction"} <= names
            for c in qa["checks"]:
                assert c["passed"] == (c["value"] <= c["limit"])
            store = CalibrationStore(cfg.path(cfg.calibration.directory))
            truth = room.model("8x8").truth
            assert qa["defect_counts"]["dead"] == int(np.count_nonzero(truth.dead))
            pictures(eng, pending)
            assert eng.get(f"/api/calibration/pending/{first}/gain.png").status_code == 404  # not pending
            gw = run.daemon.gateway
            assert gw is not None
            assert store.latest_id(gw.calibration_key) == first  # the store's own view
            assert expose(eng, csrf, room, storescp, 2) == first  # pending: not used

            body = {"calibration_id": new}
            assert tech.post("/api/calibration/accept", json=body, headers=tcsrf).status_code == 403
            assert tech.post("/api/calibration/discard", json=body, headers=tcsrf).status_code == 403
            assert tech.get(pending["pictures"]["gain"]).status_code == 403
            assert eng.post("/api/calibration/accept", json=body).status_code == 403  # no CSRF token
            assert eng.post("/api/calibration/accept", json={"calibration_id": first},
                            headers=csrf).status_code == 409  # not the pending set
            assert eng.get("/api/calibration").json()["pending"]["calibration_id"] == new

            assert eng.post("/api/calibration/discard", json=body, headers=csrf).status_code == 200
            assert eng.get("/api/calibration").json()["pending"] is None
            assert eng.post("/api/calibration/accept", json=body, headers=csrf).status_code == 409  # gone
            assert expose(eng, csrf, room, storescp, 3) == first  # the old set stays

            room.place("open")
            again = calibrate(eng, csrf, pending=True)["pending"]["calibration_id"]
            r = eng.post("/api/calibration/accept", json={"calibration_id": again}, headers=csrf)
            assert r.status_code == 200, r.text
            assert eng.get("/api/calibration").json()["pending"] is None
            assert expose(eng, csrf, room, storescp, 4) == again  # the next image uses the accepted set
            assert eng.get("/api/status").json()["calibration"]["calibration_id"] == again

            trail = [e for e in adm.get("/api/audit").json() if e["event"] == "Software Configuration"]
            # newest first: the accept, the accept of the discarded set (refused), the discard, the
            # accept of a set not pending (refused); the technologist's tries never reached the action
            assert [(e["user"], e["outcome"]) for e in trail] == [("eric", 0), ("eric", 4), ("eric", 0), ("eric", 4)]
    finally:
        assert run.stop() == 0


def test_a_pending_set_survives_a_restart(tmp_path: Path, room: SimRoom, storescp: StoreSCP) -> None:
    """Left pending at a stop, it is still pending (and still unused) after the restart."""
    path = write_config(tmp_path, room, storescp)
    users(path, room)
    run = start(path, room)
    try:
        with run.client() as eng:
            csrf = login(eng, "eric")
            room.place("open")
            new = calibrate(eng, csrf, pending=True)["pending"]["calibration_id"]
    finally:
        assert run.stop() == 0
    run = start(path, room)
    try:
        with run.client() as eng:
            csrf = login(eng, "eric")
            state = eng.get("/api/calibration").json()
            assert state["pending"]["calibration_id"] == new and state["pending"]["qa"]["checks"]
            assert eng.get("/api/status").json()["calibration"]["calibration_id"] == ""  # none in use yet
            assert eng.post("/api/calibration/accept", json={"calibration_id": new}, headers=csrf).status_code == 200
            assert eng.get("/api/status").json()["calibration"]["calibration_id"] == new
    finally:
        assert run.stop() == 0
