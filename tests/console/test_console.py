"""The console in real Chromium against the whole system: the simulator process, Orthanc (RIS and
PACS) and `dxgate run`.

- the technologist's flow at 1920x1080 and 1366x768: log in, find and pick the worklist entry,
  choose the view, make ready by keyboard, press the simulated hand switch, see the preview with
  EI/DI banded as the archive's own DeviationIndex says, reject with a TG-305 reason and repeat,
  accept, see each image's forwarding and the image in Orthanc, close the exam; no horizontal
  scroll and the main actions on screen; nothing fetched from elsewhere;
- the log-in page shows no patient data (and without a session the API gives none);
- a session that ends (cookie gone, or idle) goes back to the log-in page;
- a technologist sees no service actions and the API refuses them (403); an engineer and an
  administrator do see theirs.
The archive (Orthanc's REST API) and the simulator are the truth, never the console's own text.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import pytest

from tests.console.conftest import (
    ACCESSION,
    BIRTH,
    OTHER_ACCESSION,
    PATIENT,
    PATIENT_ID,
    Room,
    wait_archived,
)
from tests.service.processes import PASSWORD, login, until

pytestmark = pytest.mark.peers

CANARIES = (PATIENT, "Canary", "Wilhelmina", PATIENT_ID, ACCESSION, BIRTH, "1961", OTHER_ACCESSION, "Other^Person")
VIEWPORTS = {"1920x1080": (1920, 1080), "1366x768": (1366, 768)}


def di_band(di: float) -> str:
    """The bands of docs/console.md (AAPM Report 116), written out independently of the gateway."""
    d = abs(di)
    return "target" if d <= 0.5 else "acceptable" if d <= 1.0 else "review" if d <= 3.0 else "action"


def expect() -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect


def log_in(page: Any, room: Room, user: str, password: str = PASSWORD) -> None:
    page.goto(room.base + "/console/")
    page.fill("#user", user)
    page.fill("#password", password)
    page.click("#login-button")
    page.wait_for_url("**/console/tech.html")
    page.wait_for_selector("body[data-ready='1']")


def api_json(page: Any, room: Room, path: str) -> Any:
    r = page.request.get(room.base + path)
    assert r.status == 200, r.text()
    return r.json()


def assert_fits(page: Any, width: int, height: int) -> None:
    """No page scroll in either direction; every expose-side action wholly on screen."""
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert page.evaluate("document.documentElement.scrollHeight <= document.documentElement.clientHeight")
    for sel in ("#search", "#refresh", "#protocol", "#arm", "#accept", "#reject-reason", "#reject", "#repeat",
                "#close-exam", "#logout", "#generator-state"):
        box = page.locator(sel).bounding_box()
        assert box is not None, sel
        assert box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width \
            and box["y"] + box["height"] <= height, (sel, box)


def expose(room: Room, page: Any, n_before: int) -> tuple[str, float]:
    """Wait for the generator's release, press the hand switch; the preview of the new image
    appears. Returns its UID (the daemon's) and seconds from the press to the preview on screen."""
    sim = room.sim
    until(lambda: sim.call("status")["generator_state"] == "ENABLED", timeout_s=20, what="release to the hand switch")
    pulses = sim.call("status")["pulses"]
    t0 = time.monotonic()
    assert sim.call("press")["fired"]
    assert sim.call("status")["pulses"] == pulses + 1
    images = until(lambda: (lambda i: i if len(i) > n_before else None)(api_json(page, room, "/api/exam")["images"]),
                   timeout_s=20, what="the image after the exposure")
    uid = str(images[-1]["sop_instance_uid"])
    expect()(page.locator(f"#preview[data-uid='{uid}']")).to_be_visible(timeout=10_000)
    return uid, time.monotonic() - t0


def assert_dose_shown(page: Any, tags: dict[str, Any]) -> None:
    """EI and DI on screen are the archive's, coloured by the band of the archive's DI."""
    di, ei = float(tags["DeviationIndex"]), float(tags["ExposureIndex"])
    band = di_band(di)
    e = expect()
    e(page.locator("#di-badge")).to_have_attribute("data-band", band)
    e(page.locator("#ei-badge")).to_have_attribute("data-band", band)
    e(page.locator("#di-badge")).to_have_text(f"DI {'+' if round(di, 2) > 0 else ''}{round(di, 2):.1f}")
    e(page.locator("#ei-badge")).to_have_text(f"EI {round(round(ei, 1))}")


@pytest.mark.parametrize("size", list(VIEWPORTS), ids=list(VIEWPORTS))
def test_technologist_flow_reaches_the_archive(room: Room, browser: Any, size: str) -> None:
    width, height = VIEWPORTS[size]
    e = expect()
    context = browser.new_context(viewport={"width": width, "height": height})
    elsewhere: list[str] = []
    context.on("request", lambda req: None if req.url.startswith(room.base + "/") else elsewhere.append(req.url))
    page = context.new_page()
    try:
        log_in(page, room, "tina")
        assert_fits(page, width, height)
        e(page.locator("#admin-link")).to_have_count(0)
        # the generator's states arrive live: record them, and prove the page is never reloaded
        page.evaluate("""() => { window.__seen = []; window.__sameDocument = true;
            new MutationObserver(() => __seen.push(document.getElementById('generator-state').textContent))
              .observe(document.getElementById('generator-state'), {childList: true, subtree: true,
                                                                    characterData: true}); }""")
        room.shot(page, f"{size}-1-worklist")

        page.fill("#search", ACCESSION[-4:].lower())  # search: part of the accession, any case
        e(page.locator(".worklist-item")).to_have_count(1)
        page.fill("#search", "wilhelm")  # ... and by name
        e(page.locator(".worklist-item")).to_have_count(1)
        e(page.locator("#worklist-source")).to_contain_text("From the RIS")
        page.click(f".worklist-item[data-accession='{ACCESSION}']")
        e(page.locator("#patient-name")).to_have_text("Canary, Wilhelmina")
        page.select_option("#protocol", label="Chest PA")
        page.keyboard.press("Escape")  # leave the select: the shortcuts are for the page
        page.keyboard.press("r")  # Ready: sets the chosen view and releases the hand switch
        e(page.locator("#armed-state")).to_have_text("released")
        exam = api_json(page, room, "/api/exam")
        assert exam["armed"] and exam["view"]["body_part"] == "CHEST" and exam["view"]["view_position"] == "PA"
        assert exam["exam"]["item"]["accession_number"] == ACCESSION
        room.shot(page, f"{size}-2-ready")

        first, latency_1 = expose(room, page, 0)
        first_tags = wait_archived(room.orthanc, first)
        assert_dose_shown(page, first_tags)
        assert page.evaluate("window.__sameDocument === true")  # the preview came without a reload
        seen = page.evaluate("window.__seen")
        assert {"exposing", "readout"} & set(seen), seen  # live generator state from the event stream
        e(page.locator("#marker")).to_have_text("")  # chest: no laterality marker
        room.shot(page, f"{size}-3-preview")

        # reject with a TG-305 reason and repeat (keyboard: P), the target EI now the first image's
        # EI: the repeat's DI is near 0, so two bands are seen (the first's, and the target band)
        page.select_option("#reject-reason", label="Positioning")
        page.fill("#target-ei", str(round(float(first_tags["ExposureIndex"]))))
        page.keyboard.press("Escape")
        page.evaluate("() => { window.__seen = []; }")
        page.keyboard.press("p")
        e(page.locator(f".image-row[data-uid='{first}'] .status")).to_have_text("rejected")
        # the release of the new view (a fresh prepare, then ready), not the withdrawn one
        page.wait_for_function("() => __seen.includes('prepare') && __seen[__seen.length - 1] === 'ready'",
                               timeout=10_000)
        target = round(float(first_tags["ExposureIndex"]))
        exam = until(lambda: (lambda x: x if x["armed"] and x["view"]["target_ei"] == target else None)(
            api_json(page, room, "/api/exam")), timeout_s=10, what="the repeat released with the new target EI")
        e(page.locator("#armed-state")).to_have_text("released")
        [img] = exam["images"]
        assert (img["status"], img["reason"]) == ("rejected", "Positioning")

        second, latency_2 = expose(room, page, 1)
        tags = wait_archived(room.orthanc, second)
        assert_dose_shown(page, tags)
        assert {di_band(float(first_tags["DeviationIndex"])), di_band(float(tags["DeviationIndex"]))} \
            >= {"target"}, (first_tags["DeviationIndex"], tags["DeviationIndex"])
        assert (tags["PatientName"], tags["PatientID"], tags["AccessionNumber"]) == (PATIENT, PATIENT_ID, ACCESSION)
        assert (tags["BodyPartExamined"], tags["ViewPosition"]) == ("CHEST", "PA")
        page.keyboard.press("a")  # accept
        e(page.locator(f".image-row[data-uid='{second}'] .status")).to_have_text("accepted")
        statuses = [(i["sop_instance_uid"], i["status"]) for i in api_json(page, room, "/api/exam")["images"]]
        assert statuses == [(first, "rejected"), (second, "accepted")]
        # each image's forwarding, as the archive has it
        e(page.locator(f".image-row[data-uid='{second}'] .fwd span[data-destination='orthanc']")) \
            .to_have_attribute("data-state", re.compile("^(sent|committed)$"), timeout=15_000)
        room.shot(page, f"{size}-4-accepted")

        page.click("#close-exam")
        e(page.locator("#banner")).to_contain_text("No exam open")
        assert api_json(page, room, "/api/exam")["open"] is False
        assert_fits(page, width, height)
        room.shot(page, f"{size}-5-closed")
        print(f"{size}: preview on screen {latency_1:.2f} s and {latency_2:.2f} s after the hand switch")
        assert not elsewhere, f"the console fetched from elsewhere: {elsewhere}"
    finally:
        if page.request.get(room.base + "/api/exam").json().get("open"):  # leave the room as found
            csrf = {"X-CSRF-Token": api_json(page, room, "/api/me")["csrf_token"]}
            page.request.post(room.base + "/api/exam/close", headers=csrf,
                              data={"completed": False, "reason": "test failed"})
        context.close()


def test_log_in_page_shows_no_patient_data(room: Room, browser: Any) -> None:
    e = expect()
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        page.goto(room.base + "/")
        page.wait_for_url("**/console/")
        e(page.locator("#login-form")).to_be_visible()
        room.shot(page, "login")

        def shows_none() -> None:
            html, text = page.content(), page.inner_text("body")
            for canary in CANARIES:
                assert canary not in html and canary not in text, canary

        shows_none()
        assert page.request.get(room.base + "/api/worklist").status == 401  # and the page could not get any
        page.fill("#user", "nobody")
        page.fill("#password", "not the password")
        page.click("#login-button")
        e(page.locator("#login-error")).to_have_text("Wrong user name or password.")
        shows_none()
        page.goto(room.base + "/console/tech.html")  # straight to the console: back to log-in, nothing shown
        page.wait_for_url("**/console/")
        shows_none()
        headers = page.request.get(room.base + "/console/tech.html").headers
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["cache-control"] == "no-store"
    finally:
        context.close()


def test_worklist_text_is_shown_as_text_never_run(room: Room, browser: Any) -> None:
    e = expect()
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        log_in(page, room, "tina")
        page.fill("#search", "PIDMARKUP")
        item = page.locator(".worklist-item[data-accession='ACCMARKUP3'] .name")
        e(item).to_have_text("Mark<b>Bold</b>, Up<i>")
        assert page.locator("#worklist b, #worklist i").count() == 0  # no element made from the text
    finally:
        context.close()


def test_session_end_and_idle_return_to_log_in(room: Room, browser: Any) -> None:
    e = expect()
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        page.clock.install()
        log_in(page, room, "tina")
        context.clear_cookies()  # the session is gone (time-out or restart): the next call says 401
        page.click("#refresh")
        page.wait_for_url("**/console/?reason=expired")
        e(page.locator("#login-reason")).to_contain_text("session has ended")

        log_in(page, room, "tina")
        idle_s = 900  # ApiConfig.session_idle_s default
        page.clock.run_for((idle_s - 30) * 1000)  # not yet
        assert page.url.endswith("/console/tech.html")
        page.clock.run_for(40_000)
        page.wait_for_url("**/console/?reason=idle")
        e(page.locator("#login-reason")).to_contain_text("logged out")
        assert page.request.get(room.base + "/api/me").status == 401  # the server's session is closed too
    finally:
        context.close()


def test_technologist_sees_no_service_actions_and_the_api_refuses_them(room: Room, browser: Any) -> None:
    e = expect()
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        log_in(page, room, "tina")
        e(page.locator("#admin-link")).to_have_count(0)
        page.goto(room.base + "/console/admin.html")
        e(page.locator("#refused")).to_be_visible()
        e(page.locator("#admin-main")).to_be_hidden()
        e(page.locator("button.release")).to_have_count(0)
        room.shot(page, "technologist-on-service-page")
        csrf = {"X-CSRF-Token": api_json(page, room, "/api/me")["csrf_token"]}
        for path in ("/api/queue/1.2.3/retry", "/api/queue/1.2.3/release", "/api/calibration", "/api/exam/expose"):
            assert page.request.post(room.base + path, headers=csrf).status == 403, path
        assert page.request.get(room.base + "/api/audit").status == 403
        assert page.request.get(room.base + "/api/calibration").status == 403
    finally:
        context.close()

    # the same page for those it is for: the engineer's queue, the administrator's audit trail
    for user, audit in (("eric", False), ("ada", True)):
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        page = context.new_page()
        try:
            log_in(page, room, user)
            page.click("#admin-link")
            page.wait_for_selector("body[data-ready='1']")
            e(page.locator("#admin-main")).to_be_visible()
            e(page.locator("#audit-panel")).to_have_count(1 if audit else 0)
            if audit:
                e(page.locator("#audit td", has_text="tina").first).to_be_visible()
            room.shot(page, f"service-{user}")
        finally:
            context.close()


def test_unscheduled_patient_then_discontinue(room: Room, browser: Any) -> None:
    e = expect()
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        log_in(page, room, "tina")
        page.click("#unscheduled summary")
        page.fill("#u-last", "Emergency")
        page.fill("#u-first", "Ella")
        page.fill("#u-id", "EMERG1")
        page.select_option("#u-sex", "F")
        page.click("#unscheduled-form button[type=submit]")
        e(page.locator("#patient-name")).to_have_text("Emergency, Ella")
        exam = api_json(page, room, "/api/exam")
        assert exam["open"] and exam["exam"]["item"]["patient_name"] == "Emergency^Ella"
        assert exam["exam"]["item"]["patient_id"] == "EMERG1" and exam["exam"]["item"]["accession_number"] == ""
        page.click("#discontinue")  # no reason: refused at the console
        e(page.locator("#toast")).to_contain_text("Say why")
        assert api_json(page, room, "/api/exam")["open"] is True
        page.fill("#discontinue-reason", "patient left")
        page.click("#discontinue")
        e(page.locator("#banner")).to_contain_text("No exam open")
        assert api_json(page, room, "/api/exam")["open"] is False
    finally:
        context.close()


def pending_to_offline(room: Room) -> list[dict[str, Any]]:
    """Deliveries waiting for the archive that is down; one exposure (through the API) makes one."""
    with room.daemon.client() as c:
        csrf = login(c, "tina")
        if not c.get("/api/queue", params={"state": "pending", "destination": "offline"}).json():
            assert c.post("/api/exam", json={"accession_number": OTHER_ACCESSION}, headers=csrf).status_code == 200
            assert c.post("/api/exam/view", json={"body_part": "HAND", "view_position": "PA", "laterality": "L",
                                                  "kvp": 55, "mas": 2}, headers=csrf).status_code == 200
            assert c.post("/api/exam/arm", json={"armed": True}, headers=csrf).status_code == 200
            until(lambda: room.sim.call("status")["generator_state"] == "ENABLED", timeout_s=20, what="release")
            assert room.sim.call("press")["fired"]
            until(lambda: c.get("/api/exam").json()["images"], timeout_s=20, what="the image")
            assert c.post("/api/exam/close", json={"completed": True}, headers=csrf).status_code == 200
        rows: list[dict[str, Any]] = until(
            lambda: c.get("/api/queue", params={"state": "pending", "destination": "offline"}).json(),
            timeout_s=20, what="a pending delivery to the offline archive")
        return rows


def test_engineer_retries_a_delivery_from_the_queue_view(room: Room, browser: Any) -> None:
    e = expect()
    uid = pending_to_offline(room)[0]["sop_instance_uid"]

    def offline() -> dict[str, Any]:
        with room.daemon.client() as c:
            login(c, "eric")
            return next(d for d in c.get(f"/api/queue/{uid}").json() if d["destination"] == "offline")

    # wait until the backoff puts the next try well ahead: a try before then is the operator's
    row = until(lambda: (lambda d: d if d["next_attempt_at"] - time.time() > 4 else None)(offline()),
                timeout_s=40, what="a backoff of more than 4 s")
    tries, due = row["attempts"], row["next_attempt_at"]
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        log_in(page, room, "eric")
        page.click("#admin-link")
        page.wait_for_selector("body[data-ready='1']")
        page.select_option("#queue-state", "pending")
        e(page.locator(f"#queue tr[data-uid='{uid}'] button.release")).to_have_count(0)  # release: admins only
        page.locator(f"#queue tr[data-uid='{uid}'] button", has_text="Retry now").first.click()
        e(page.locator("#toast")).to_contain_text("Retrying: offline")
        until(lambda: next(d for d in api_json(page, room, f"/api/queue/{uid}")
                           if d["destination"] == "offline")["attempts"] > tries,
              timeout_s=15, what="the retried delivery tried again")
        assert time.time() < due, "tried again only when its backoff ended, not on the operator's retry"
        room.shot(page, "service-retry")
    finally:
        context.close()


def test_engineer_calibrates_from_the_service_page(room: Room, browser: Any) -> None:
    """The calibration wizard: instructions, start, progress, then the new set pending (not used)
    with its maps and QA figures as pictures, accepted: then it is the set in use. The panel's
    flat fields are X-ray pulses the simulator counts (its own truth)."""
    e = expect()
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        log_in(page, room, "eric")
        page.click("#admin-link")
        page.wait_for_selector("body[data-ready='1']")
        e(page.locator("#cal-steps li")).to_have_count(2)
        e(page.locator("#cal-steps li").nth(1)).to_contain_text("Flat fields")
        e(page.locator("#cal-start")).to_be_disabled()  # not before the engineer confirms the set-up
        before_id = api_json(page, room, "/api/status")["calibration"]["calibration_id"]
        pulses = room.sim.call("status")["pulses"]
        room.sim.call("place", scene="open")
        try:
            page.check("#cal-ready")
            page.click("#cal-start")
            e(page.locator("#cal-pending-id")).to_have_text(
                re.compile(rf"^(?!{re.escape(before_id)}$)\S+$"), timeout=30_000)
        finally:
            room.sim.call("place", scene="chest")
        job = api_json(page, room, "/api/calibration")
        new_id = job["pending"]["calibration_id"]
        assert new_id == job["calibration_id"] and new_id != before_id
        assert api_json(page, room, "/api/status")["calibration"]["calibration_id"] == before_id  # not yet used
        e(page.locator("#cal-result")).to_contain_text(f"New calibration {new_id} is pending")
        for img, width in (("#cal-map-offset", 384), ("#cal-map-gain", 384), ("#cal-map-defects", 384),
                           ("#cal-qa-chart", 720)):  # the PNGs loaded: small maps, the QA chart
            e(page.locator(img)).to_be_visible()
            e(page.locator(img)).to_have_js_property("naturalWidth", width)
        checks = job["pending"]["qa"]["checks"]
        e(page.locator("#cal-qa tr")).to_have_count(len(checks))
        for c in checks:
            e(page.locator(f"#cal-qa tr[data-check='{c['name']}'] td").nth(3)).to_have_text(
                "pass" if c["value"] <= c["limit"] else "FAIL")
        e(page.locator("#cal-qa-result")).to_have_text("PASS" if all(c["value"] <= c["limit"] for c in checks)
                                                       else "FAIL")
        assert room.sim.call("status")["pulses"] - pulses >= 4  # the flat fields were exposed
        room.shot(page, "calibration-pending")
        page.click("#cal-accept")
        e(page.locator("#cal-result")).to_have_text(f"New calibration {new_id} is in use.")
        e(page.locator("#cal-pending")).to_be_hidden()
        assert api_json(page, room, "/api/status")["calibration"]["calibration_id"] == new_id
        assert api_json(page, room, "/api/calibration")["pending"] is None
        page.locator("#calibration-panel").scroll_into_view_if_needed()
        room.shot(page, "calibration-done")
    finally:
        context.close()


def _exposures_for_statistics(room: Room) -> tuple[float, list[tuple[str, str, str, str]]]:
    """As an engineer over the API: CHEST PA x3 (two rejected with TG-305 reasons, one accepted)
    and CHEST LL x1 left unjudged (counted accepted when the exam closes; the exam is left open).
    Returns the start time and (uid, view, verdict, reason) per image."""
    since = time.time() - 1
    made: list[tuple[str, str, str, str]] = []
    with room.daemon.client() as c:
        csrf = login(c, "eric")
        assert c.post("/api/exam", headers=csrf, json={"unscheduled": {"patient_name": "Stats^Phantom"}}) \
            .status_code == 200
        for view, verdicts in (("PA", (("rejected", "positioning"), ("rejected", "motion"), ("accepted", ""))),
                               ("LL", (("", ""),))):
            r = c.post("/api/exam/view", headers=csrf, json={"body_part": "CHEST", "view_position": view,
                                                             "kvp": 80.0, "mas": 1.2, "target_ei": 400.0})
            assert r.status_code == 200, r.text
            for status, reason in verdicts:
                assert c.post("/api/exam/arm", headers=csrf, json={"armed": True}).status_code == 200
                r = c.post("/api/exam/expose", headers=csrf)
                assert r.status_code == 200, r.text
                uid = r.json()["sop_instance_uid"]
                if status:
                    assert c.post(f"/api/exam/images/{uid}/review", headers=csrf,
                                  json={"status": status, "reason": reason}).status_code == 200
                made.append((uid, view, status or "accepted", reason))
    return since, made


def _close_exam(room: Room) -> None:
    with room.daemon.client() as c:
        csrf = login(c, "eric")
        assert c.post("/api/exam/close", headers=csrf, json={"completed": True}).status_code == 200


def _collimation_overlay_is_the_archived_images(room: Room, browser: Any, uid: str) -> None:
    """The preview's overlay is the X-Ray Collimator field the archived image carries, scaled
    from the image's size to the preview's."""
    tags = wait_archived(room.orthanc, uid)
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        log_in(page, room, "tina")
        canvas = page.locator(f"#preview[data-uid='{uid}']")
        expect()(canvas).to_be_visible(timeout=10_000)
        room.shot(page, "preview-collimation")
        if tags.get("CollimatorShape") != "RECTANGULAR":
            assert canvas.get_attribute("data-collimation") is None
            pytest.fail("the archived image carries no rectangular collimator: nothing to overlay")
        width, height = page.evaluate("() => { const c = document.getElementById('preview'); "
                                      "return [c.width, c.height]; }")
        sx, sy = width / int(tags["Columns"]), height / int(tags["Rows"])
        left, upper = int(tags["CollimatorLeftVerticalEdge"]), int(tags["CollimatorUpperHorizontalEdge"])
        want = [(left - 1) * sx, (upper - 1) * sy,
                int(tags["CollimatorRightVerticalEdge"]) * sx, int(tags["CollimatorLowerHorizontalEdge"]) * sy]
        got = [float(v) for v in (canvas.get_attribute("data-collimation") or "").split(",")]
        assert got == pytest.approx(want, abs=0.06)
        # drawn: the overlay's colour is on the canvas, on the field's edge
        x, y, span = round(want[0]), max(0, round(want[1]) - 1), max(1, round(want[2] - want[0]))
        pixels = page.evaluate(f"() => Array.from(document.getElementById('preview').getContext('2d')"
                               f".getImageData({x}, {y}, {span}, 3).data)")
        assert any(pixels[i] > 200 and pixels[i + 2] < 120 for i in range(0, len(pixels), 4))  # yellow, not grey
    finally:
        context.close()


def test_engineer_sees_reject_analysis_and_exports_it_as_csv(room: Room, browser: Any) -> None:
    """TG-305 / TG-151 figures per body part and view, checked against the archive's own EI and DI
    of the exposures made here (independent of the console's arithmetic); the configuration
    view redacts secrets and a technologist reaches neither."""
    import csv
    import io
    import statistics

    since, made = _exposures_for_statistics(room)
    try:
        _collimation_overlay_is_the_archived_images(room, browser, made[-1][0])
    finally:
        _close_exam(room)
    truth: dict[str, dict[str, Any]] = {}
    for uid, view, status, reason in made:
        tags = wait_archived(room.orthanc, uid)  # hold_s = 0 in this room: every image reaches the archive
        t = truth.setdefault(view, {"images": 0, "rejected": 0, "reasons": {}, "ei": [], "di": []})
        t["images"] += 1
        t["rejected"] += status == "rejected"
        if status == "rejected":
            t["reasons"][reason] = t["reasons"].get(reason, 0) + 1
        t["ei"].append(float(tags["ExposureIndex"]))
        t["di"].append(float(tags["DeviationIndex"]))
    e = expect()
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        log_in(page, room, "eric")
        page.click("#admin-link")
        page.wait_for_selector("body[data-ready='1']")
        r = page.request.get(room.base + f"/api/console/review-stats.csv?since={since}")
        assert r.status == 200 and r.headers["content-type"].startswith("text/csv")
        rows = {row["view_position"]: row for row in csv.DictReader(io.StringIO(r.text()))}
        assert set(rows) == {"PA", "LL"}
        for view, t in truth.items():
            row = rows[view]
            assert row["body_part"] == "CHEST"
            assert (int(row["images"]), int(row["rejected"])) == (t["images"], t["rejected"])
            assert float(row["reject_rate_pct"]) == pytest.approx(100 * t["rejected"] / t["images"], abs=1e-3)
            for reason in ("positioning", "motion", "artifact"):
                assert int(row[f"rejected_{reason}"]) == t["reasons"].get(reason, 0)
            assert float(row["ei_median"]) == pytest.approx(statistics.median(t["ei"]), rel=1e-3)
            assert float(row["di_mean"]) == pytest.approx(statistics.fmean(t["di"]), abs=1e-2)
            within = 100 * sum(abs(d) <= 1 for d in t["di"]) / len(t["di"])
            assert float(row["di_within_1_pct"]) == pytest.approx(within, abs=1e-3)
        per_image = page.request.get(room.base + f"/api/console/reviews.csv?since={since}")
        assert per_image.status == 200
        got = {(x["sop_instance_uid"], x["status"], x["reason"], x["reviewed"])
               for x in csv.DictReader(io.StringIO(per_image.text()))}
        assert got == {(u, s, rsn, "no" if v == "LL" else "yes") for u, v, s, rsn in made}
        assert "Stats" not in per_image.text()  # no patient data in the export
        # the page shows the same figures (LL: only this test makes lateral chests)
        lateral = page.locator("#stats tr[data-view='CHEST LL'] td")
        e(lateral.nth(2)).to_have_text(str(truth["LL"]["images"]))
        e(lateral.nth(4)).to_have_text("0.0 %")
        e(lateral.nth(6)).to_have_text(f"{statistics.median(truth['LL']['ei']):.0f}")
        page.locator("#stats-panel").scroll_into_view_if_needed()
        room.shot(page, "service-reject-analysis")
        # the configuration, read-only and redacted
        shown = page.locator("#config").text_content() or ""
        assert '"destinations"' in shown and '"called_ae": "ORTHANC"' in shown
        config = api_json(page, room, "/api/console/config")
        assert config["review"] == {"hold_s": 0.0, "send_rejection_kos": False, "keep_rejected_days": 90.0}
        page.locator("#config-panel").scroll_into_view_if_needed()
        room.shot(page, "service-configuration")
    finally:
        context.close()
    with room.daemon.client() as c:
        login(c, "tina")
        for path in ("/api/console/review-stats", "/api/console/review-stats.csv", "/api/console/reviews.csv",
                     "/api/console/config"):
            assert c.get(path).status_code == 403, path


def test_ris_down_shows_the_saved_worklist_and_its_age(room: Room, browser: Any) -> None:
    """Last in this module: it stops the room's Orthanc (the RIS) for good."""
    e = expect()
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        log_in(page, room, "tina")
        e(page.locator("#worklist-source")).to_have_attribute("data-source", "ris")
        room.orthanc.stop()
        page.click("#refresh")
        e(page.locator("#toast")).to_contain_text("The RIS does not answer")
        e(page.locator("#worklist-source")).to_have_attribute("data-source", "cache")
        e(page.locator("#worklist-source")).to_contain_text(re.compile(r"RIS not reachable — saved list from .* old"))
        e(page.locator(f".worklist-item[data-accession='{ACCESSION}']")).to_be_visible()  # still there to pick
        room.shot(page, "ris-down")
    finally:
        context.close()


def test_daemon_stops_promptly_with_a_console_open(room: Room, browser: Any) -> None:
    """Last in this module: SIGTERM while a console holds the event stream open; the daemon
    still stops well within its bound (an open console must not use up the forwarder's and the
    audit trail's share of it). The room's bound is 8 s."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        log_in(page, room, "tina")
        assert room.daemon.proc is not None
        t0 = time.monotonic()
        room.daemon.signal(signal.SIGTERM)
        rc = room.daemon.proc.wait(timeout=60)
        took = time.monotonic() - t0
        print(f"daemon stopped in {took:.2f} s with a console open")
        assert rc == 0 and took < 4, (rc, took)
    finally:
        context.close()
