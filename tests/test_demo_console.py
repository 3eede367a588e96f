"""`dxgate demo` without --once: after the exposures the console stays up on the simulator and
the embedded peers, with log-ins made for the run, until SIGINT — a real process, driven from
Debian's Chromium and over HTTP. The tests share one demo and run in file order: the last one
stops it."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pydicom
import pytest

from gateway.config import load
from gateway.demo import CONSOLE_ENTRIES, DEMO_PATIENTS, DemoHandSwitch
from gateway.events import EventBus
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.peers import in_ci, require
from tests.service.processes import until

START_TIMEOUT_S = 90.0  # calibration and one exposure, then the daemon (pytest-timeout: 120 s)
STOP_TIMEOUT_S = 30.0
LOGIN = re.compile(r"^\s+(technologist|engineer|admin)\s+(\S+)\s+(\S+)$")


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    home: Path
    stdout: list[str]
    base: str
    logins: dict[str, tuple[str, str]]  # role -> (user, password)
    stderr_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30)

    def login(self, c: httpx.Client, role: str) -> dict[str, str]:
        user, password = self.logins[role]
        r = c.post("/api/login", json={"user": user, "password": password})
        assert r.status_code == 200, r.text
        return {"X-CSRF-Token": r.json()["csrf_token"]}


def _lines(stream: IO[str], into: queue.SimpleQueue[str | None]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)  # end of output: the process has exited or closed stdout


def _wait_for(lines: queue.SimpleQueue[str | None], seen: list[str], last: str, timeout_s: float) -> None:
    """Read stdout lines into `seen` until the one starting with `last`; bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {last!r} line within {timeout_s:g} s; stdout so far: {seen}") from None
        if line is None:
            raise AssertionError(f"the demo ended before printing {last!r}; stdout: {seen}")
        seen.append(line)
        if line.startswith(last):
            return


def _closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo for the module: the browser test uses it, the last test stops it with SIGINT."""
    exe = Path(sys.executable).parent / "dxgate"
    root = tmp_path_factory.mktemp("demo")
    home, stderr_path = root / "home", root / "demo.stderr"
    with stderr_path.open("w") as err:
        # -vv: DEBUG logs from every module (pynetdicom's and uvicorn's too), the most a log could leak
        proc = subprocess.Popen([str(exe), "-vv", "demo", "--home", str(home), "-n", "1"], stdout=subprocess.PIPE,
                                stderr=err, text=True)
    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    assert proc.stdout is not None
    reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        _wait_for(lines, seen, "Ctrl-C stops the demo", START_TIMEOUT_S)
        url = next(line.removeprefix("console: ") for line in seen if line.startswith("console: "))
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        logins = {m[1]: (m[2], m[3]) for m in map(LOGIN.match, seen) if m}
        yield Demo(proc=proc, home=home, stdout=seen, base=url.rstrip("/"), logins=logins, stderr_path=stderr_path)
    finally:
        if proc.poll() is None:
            proc.kill()  # by its PID: only when a test failed before stopping it
            proc.wait(timeout=STOP_TIMEOUT_S)
        reader.join(timeout=STOP_TIMEOUT_S)  # the process is gone: its stdout ends
        proc.stdout.close()


def _accept_next_exposure(demo: Demo, c: httpx.Client, csrf: dict[str, str], accession: str) -> str:
    """From the console's side only: open the entry, choose the view, Ready; the demo's simulated
    hand switch fires; accept and close. Returns the new image's UID."""
    assert c.post("/api/exam", json={"accession_number": accession}, headers=csrf).status_code == 200
    r = c.post("/api/exam/view", json={"body_part": "CHEST", "view_position": "PA", "kvp": 80, "mas": 1.2},
               headers=csrf)
    assert r.status_code == 200, r.text
    assert c.post("/api/exam/arm", json={"armed": True}, headers=csrf).status_code == 200
    images: list[dict[str, Any]] = until(lambda: c.get("/api/exam").json()["images"], timeout_s=30,
                                         what="the image of the simulated hand switch")
    uid = str(images[-1]["sop_instance_uid"])
    r = c.post(f"/api/exam/images/{uid}/review", json={"status": "accepted", "reason": ""}, headers=csrf)
    assert r.status_code == 200, r.text
    assert c.post("/api/exam/close", json={"completed": True}, headers=csrf).status_code == 200
    return uid


def _archived(demo: Demo, uid: str) -> Path:
    """The demo PACS's own copy of an instance, once it has it."""
    path: Path = until(lambda: next((p for p in (demo.home / "pacs").glob("*.dcm")
                                     if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == uid), None),
                       timeout_s=60, what=f"instance {uid} at the demo PACS")
    return path


def test_demo_console_in_a_browser_exposes_with_the_simulated_hand_switch(
        demo: Demo, dciodvfy: Callable[[Path], None], tmp_path: Path) -> None:
    """From the browser alone: log in with the printed log-in, pick the entry, Ready; the demo's
    simulated hand switch fires; the preview shows; accept, close; the image is at the PACS."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        msg = "Python playwright is not installed (pip install -e '.[test]')"
        if in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    user, password = demo.logins["technologist"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(demo.base + "/console/")
            page.fill("#user", user)
            page.fill("#password", password)
            page.click("#login-button")
            page.wait_for_url("**/console/tech.html")
            page.wait_for_selector("body[data-ready='1']")
            entry = page.locator(".worklist-item").first
            accession = entry.get_attribute("data-accession")
            entry.click()
            expect(page.locator("#patient-name")).to_be_visible()  # the exam is open
            page.select_option("#protocol", label="Chest PA")
            page.keyboard.press("Escape")  # leave the select: the shortcuts are for the page
            page.keyboard.press("r")  # Ready: the release; the demo presses the hand switch
            expect(page.locator("#preview[data-uid]")).to_be_visible(timeout=30_000)
            uid = page.locator("#preview").get_attribute("data-uid")
            assert uid
            expect(page.locator("#ei-badge")).to_contain_text("EI ")
            shots = Path(os.environ["DXGATE_ARTIFACTS"]) / "demo" if os.environ.get("DXGATE_ARTIFACTS") else tmp_path
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "demo-console-preview.png"))
            page.keyboard.press("a")  # accept
            expect(page.locator(f".image-row[data-uid='{uid}'] .status")).to_have_text("accepted")
            page.click("#close-exam")
            expect(page.locator("#banner")).to_contain_text("No exam open")
        finally:
            browser.close()
    path = _archived(demo, uid)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert (ds.AccessionNumber, ds.BodyPartExamined, ds.ViewPosition) == (accession, "CHEST", "PA")
    dciodvfy(path)


def test_demo_serves_the_console_with_its_logins_until_sigint(
        demo: Demo, dciodvfy: Callable[[Path], None]) -> None:
    assert set(demo.logins) == {"technologist", "engineer", "admin"}
    exposed = demo.stdout[0].split()[0]  # the summary of the exposures comes first, as with --once
    config = load(demo.home / "dxgate.toml")
    ports = {"console": int(demo.base.rsplit(":", 1)[1]), "worklist": config.worklist.port,
             "pacs": config.destinations[0].port}
    assert config.state_dir == str(demo.home)

    with demo.client() as c:
        assert c.get("/api/status").status_code == 401  # nothing without a log-in
        csrf = demo.login(c, "technologist")
        status = c.get("/api/status").json()
        panel = status["detector"]["panel"]  # ready: answering, idle, not over temperature, no alarm
        assert panel["state"] == "idle" and not panel["over_temperature"] and not panel["error"], panel
        assert not [a for a in status["alarms"] if a["code"] == "detector-not-ready"], status["alarms"]
        assert status["calibration"]["state"] == "valid"  # the demo's own calibration, reused
        assert c.get("/api/calibration").status_code == 403  # a technologist's log-in, not an engineer's
        worklist = c.get("/api/worklist").json()
        assert worklist["source"] == "ris"
        accessions = [i["accession_number"] for i in worklist["items"]]
        assert len(accessions) == CONSOLE_ENTRIES and exposed not in accessions  # the done step is gone
        uid = _accept_next_exposure(demo, c, csrf, accessions[0])
    with demo.client() as c:
        demo.login(c, "engineer")
        assert c.get("/api/calibration").status_code == 200
    with demo.client() as c:
        demo.login(c, "admin")
        assert c.get("/api/audit").status_code == 200

    # the archive's own view: the hand-switch image arrived at the embedded PACS, valid
    path = _archived(demo, uid)
    assert pydicom.dcmread(path, stop_before_pixels=True).AccessionNumber == accessions[0]
    dciodvfy(path)

    started = time.monotonic()
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=STOP_TIMEOUT_S) == 0
    stop_s = time.monotonic() - started
    assert all(_closed(port) for port in ports.values()), ports
    log = demo.stderr_path.read_text()
    assert "dxgate stopped" in log and "Traceback" not in log, log[-3000:]
    print(f"demo stopped {stop_s:.2f} s after SIGINT")
    assert "Find SCP" in log and "demo: simulated hand switch pressed (X-rays)" in log  # the logs talked...
    for name, _sex, birth in DEMO_PATIENTS:  # ...but never about a patient (invariant 7)
        for value in (name, *name.split("^"), birth):
            assert value not in log, f"patient data {value!r} in the demo's log"
    for password in (p for _u, p in demo.logins.values()):
        assert password not in log, "a password in the demo's log"


def test_demo_once_exits_after_the_exposures(tmp_path: Path) -> None:
    """--once is today's demo: no console, no log-ins printed, exit 0."""
    exe = Path(sys.executable).parent / "dxgate"
    out = subprocess.run([str(exe), "demo", "--home", str(tmp_path / "home"), "-n", "1", "--once"],
                         capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    assert "console:" not in out.stdout and "Ctrl-C" not in out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith("1 image(s) in ")


def test_demo_hand_switch_presses_once_per_ready() -> None:
    """The daemon re-releases an armed exam after every exposure; the demo's hand presses only
    for a Ready (exam armed), also when the release was already waiting — never on its own."""
    bus = EventBus()
    presses: list[str] = []
    pressed = threading.Semaphore(0)
    what = ["ready"]

    def press() -> bool:
        presses.append(what[0])
        pressed.release()
        return True

    def exposure_then_release() -> None:
        for state in ("exposing", "readout", "done", "idle", "preparing"):
            bus.publish("exposure", state=state)
        bus.publish("exposure", **waiting)  # the daemon's next release: nobody asked, no press

    waiting = {"state": "ready", "detail": "waiting for the hand switch"}
    hand = DemoHandSwitch(press, bus, press_after_s=0).start()
    try:
        bus.publish("exam", state="armed")  # Ready on the console ...
        bus.publish("exposure", **waiting)  # ... then its release: a press
        assert pressed.acquire(timeout=10)
        exposure_then_release()
        what[0] = "repeat"
        bus.publish("exam", state="armed")  # Reject & repeat while that release waits: a press
        assert pressed.acquire(timeout=10)
        exposure_then_release()
        bus.publish("exam", state="disarmed")
        bus.publish("exam", state="armed")
        bus.publish("exam", state="disarmed")  # Ready, then Stop before the release: no press
        bus.publish("exposure", **waiting)
        what[0] = "last"
        bus.publish("exam", state="armed")  # a last Ready: everything before it has been read
        assert pressed.acquire(timeout=10)
        assert presses == ["ready", "repeat", "last"]
    finally:
        hand.stop()
