"""The service page's QA reports and detector diagnostics in real Chromium, as an engineer.

Two QA reports are made on the simulator by the QA path `dxgate qa` runs (the calibration
workflow: flats, evaluation, the kept JSON and the self-contained page) and kept where the
room's daemon looks (calibration.qa_directory). The truth: the reports' own JSON files and
pages, the calibration store's own set, and the simulator's status (serial, temperature).
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.config import CalibrationConfig, Config, DestinationConfig, DetectorConfig, GeneratorConfig, load
from gateway.correction import CalibrationStore
from gateway.qa import history
from gateway.types import CalibrationKey
from hw_sim.room import SimRoom
from tests.console.conftest import Room
from tests.peers import free_port
from tests.service.processes import PASSWORD, login

pytestmark = pytest.mark.peers

TEMPERATURE_C = 31.7  # the simulated panel is set to this: the page must show what the panel says


def expect() -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect


@pytest.fixture(scope="module")
def reports(room: Room, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Two reports of the room's panel (its serial and mode), each with its page, in the room's QA directory."""
    tmp = tmp_path_factory.mktemp("qa-reports")
    serial = room.sim.info["serial"]
    with SimRoom(seed=7, serial=serial) as sim:
        config = Config(state_dir=str(tmp / "state"), detector=DetectorConfig(mode="8x8"),
                        generator=GeneratorConfig(port=sim.start_generator()),
                        calibration=CalibrationConfig(dark_frames=4, flat_frames=3, qa_flat_frames=2),
                        destinations=(DestinationConfig(name="pacs", port=free_port(), called_ae="PACS"),))
        with Gateway(config, usb_backend=sim.usb_backend()) as gw:
            gw.calibrate()
            for n in range(2):
                gw.calibration.qa(html_path=tmp / f"qa{n}.html")
    made = sorted((tmp / "state" / "qa" / serial / "8x8").glob("*.json"))
    assert len(made) == 2
    kept_dir = load(room.daemon.config)
    target = kept_dir.path(kept_dir.calibration.qa_directory) / serial / "8x8"
    target.mkdir(parents=True, exist_ok=True)
    docs = []
    for n, path in enumerate(made):
        doc = json.loads(path.read_text())
        shutil.copyfile(path, target / path.name)
        page = path.with_suffix(history.PAGE_SUFFIX)  # kept beside the JSON by the QA run itself
        assert page.read_bytes() == (tmp / f"qa{n}.html").read_bytes()
        shutil.copyfile(page, target / (history.report_name(doc) + history.PAGE_SUFFIX))
        docs.append({**doc, "_id": f"{serial}/8x8/{path.stem}", "_page": target / f"{path.stem}.html"})
    return docs


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port that records whether anything connected to it."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        s.setblocking(False)
        yield s


def test_engineer_sees_qa_reports_trend_and_diagnostics(room: Room, browser: Any, reports: list[dict[str, Any]],
                                                        listener: socket.socket) -> None:
    e = expect()
    room.sim.call("temperature", celsius=TEMPERATURE_C)
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page = context.new_page()
    try:
        page.goto(room.base + "/console/")
        page.fill("#user", "eric")
        page.fill("#password", PASSWORD)
        page.click("#login-button")
        page.wait_for_url("**/console/tech.html")
        page.goto(room.base + "/console/admin.html")
        page.wait_for_selector("body[data-ready='1']")

        # diagnostics: what the simulator and the calibration store say, not what the page thinks
        status = room.sim.call("status")
        assert status["temperature_c"] == pytest.approx(TEMPERATURE_C)
        diag = page.locator("#diag-panel")
        e(diag.locator("dd[data-key=serial]")).to_have_text(room.sim.info["serial"])
        e(diag.locator("dd[data-key=temperature]")).to_have_text(f"{status['temperature_c']:.1f} °C")
        e(diag.locator("dd[data-key=model]")).to_contain_text("SimPanel 4343")
        config = load(room.daemon.config)
        store = CalibrationStore(config.path(config.calibration.directory))
        cal = store.load(CalibrationKey(room.sim.info["serial"], "8x8"))
        e(diag.locator("dd[data-key=calibration-id]")).to_have_text(cal.calibration_id)
        e(diag.locator("dd[data-key=cal-temperature]")).to_have_text(f"{cal.temperature_c:.1f} °C")
        drift = TEMPERATURE_C - cal.temperature_c
        e(diag.locator("dd[data-key=drift]")).to_contain_text(f"{'+' if drift >= 0 else ''}{drift:.1f} °C")
        counts = cal.defect_counts()  # counted from the set's own defect map
        e(page.locator("#diag-defects tr")).to_have_count(len(counts))
        for name, n in counts.items():
            e(page.locator(f"#diag-defects tr[data-class='{name}'] td").nth(1)).to_have_text(str(n))
        e(diag.locator("dd[data-key=frames-dropped]")).to_have_text("0")
        diag.scroll_into_view_if_needed()
        room.shot(page, "service-diagnostics")

        # the QA list, newest first, and the trend of each check over both reports
        rows = page.locator("#qa-reports tr")
        e(rows).to_have_count(2)
        for n, doc in enumerate(reversed(reports)):
            row = rows.nth(n)
            e(row).to_have_attribute("data-report", doc["_id"])
            e(row.locator("td.result")).to_have_text("PASS" if doc["passed"] else "FAIL")
            e(row.locator("td").nth(1)).to_have_text(doc["detector_serial"])
            e(row.locator("td").nth(3)).to_have_text(doc["calibration_id"])
        trend = page.locator("#qa-trend tr")
        e(trend).to_have_count(len(reports[0]["checks"]))
        cluster = page.locator("#qa-trend tr[data-check='largest cluster (pixels)']")
        values = [str(c["value"]) for d in reports for c in d["checks"] if c["name"] == "largest cluster (pixels)"]
        e(cluster.locator("td.values")).to_have_text(" → ".join(v.removesuffix(".0") for v in values))
        e(cluster.locator("circle")).to_have_count(2)
        page.locator("#qa-panel").scroll_into_view_if_needed()
        room.shot(page, "service-qa")

        # open the newest report in its own tab: exactly the kept page, its pictures shown
        with context.expect_page() as opened:
            rows.nth(0).locator("a.open-report").click()
        report = opened.value
        report.wait_for_load_state()
        newest = reports[-1]
        assert report.url == room.base + f"/api/console/qa/{newest['_id']}.html"
        e(report.locator("h1")).to_contain_text(f"Detector QA: {newest['detector_serial']}")
        e(report.locator("img")).to_have_count(4)
        assert report.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert report.request.get(report.url).body() == newest["_page"].read_bytes()
        room.shot(report, "qa-report")
        report.close()

        # a kept page never runs a script nor fetches anything (the load event waits for its image)
        (reports[0]["_page"].parent / "tampered.html").write_text(
            "<!doctype html><title>kept</title><script>document.title = 'script ran'</script>"
            f"<img id='net' src='http://127.0.0.1:{listener.getsockname()[1]}/x.png'>", encoding="utf-8")
        tampered = context.new_page()
        tampered.goto(room.base + f"/api/console/qa/{reports[0]['detector_serial']}/8x8/tampered.html")
        assert tampered.title() == "kept"
        assert tampered.evaluate("document.getElementById('net').naturalWidth") == 0
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
        tampered.close()
    finally:
        context.close()
    with room.daemon.client() as c:
        path = f"/api/console/qa/{reports[0]['_id']}.html"
        assert c.get(path).status_code == 401
        login(c, "tina")
        for p in ("/api/console/qa", "/api/console/qa/trend", "/api/console/diagnostics", path):
            assert c.get(p).status_code == 403, p
