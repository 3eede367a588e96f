"""The configuration file on the service page, in real Chromium against `dxgate run`: an
administrator edits and saves it and is told what took effect now and what needs a restart; a
wrong edit is refused with the loader's message; an engineer sees it read-only.

The truth is the file on disk and the daemon's own log of its reload, never the page's text.
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
import tomli_w

from tests.console.conftest import Room
from tests.console.test_console import expect, log_in
from tests.service.processes import until

pytestmark = pytest.mark.peers


def open_service_page(page: Any, room: Room, user: str) -> None:
    log_in(page, room, user)
    page.goto(room.base + "/console/admin.html")
    page.wait_for_selector("body[data-ready='1']")
    page.locator("#config-file-panel").scroll_into_view_if_needed()


def test_admin_edits_the_configuration_and_an_engineer_only_reads_it(room: Room, browser: Any) -> None:
    e = expect()
    path = room.daemon.config
    original = path.read_bytes()
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        open_service_page(page, room, "ada")
        box = page.locator("#config-text")
        e(box).to_be_editable()
        e(page.locator("#config-save")).to_be_visible()
        shown = tomllib.loads(box.input_value())
        assert shown["destinations"][0]["called_ae"] == "ORTHANC"

        # a wrong value: refused with the loader's words, nothing written
        box.fill(tomli_w.dumps(dict(shown, worklist={**shown["worklist"], "timeout_s": -5.0})))
        page.click("#config-save")
        e(page.locator("#config-error")).to_contain_text("worklist.timeout_s: -5.0 is out of range")
        assert path.read_bytes() == original
        room.shot(page, "config-refused")

        # a good edit: the worklist's refresh applies now, the session limit at the next start
        page.click("#config-revert")
        e(page.locator("#config-error")).to_have_count(0)
        box.fill(tomli_w.dumps(dict(shown, worklist={**shown["worklist"], "refresh_s": 120.0},
                                    api={**shown["api"], "session_idle_s": 1200.0})))
        page.click("#config-save")
        e(page.locator("#config-applied")).to_be_visible()
        said = page.locator("#config-applied").locator("xpath=..").inner_text()  # with the daemon's reload outcome
        assert "Saved. Applied now: worklist." in said, said
        e(page.locator("#config-restart")).to_have_text("Needs a restart: api.")
        room.shot(page, "config-saved")
        written = tomllib.loads(path.read_text())
        assert written["worklist"]["refresh_s"] == 120.0 and written["api"]["session_idle_s"] == 1200.0
        assert path.with_name(path.name + ".previous").read_bytes() == original
        until(lambda: "reload applied (worklist)" in room.daemon.journal(), what="the daemon's reload")
    finally:
        context.close()

    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        open_service_page(page, room, "eric")
        e(page.locator("#config-text")).not_to_be_editable()
        e(page.locator("#config-actions")).to_be_hidden()
        assert tomllib.loads(page.locator("#config-text").input_value())["worklist"]["refresh_s"] == 120.0
        room.shot(page, "config-engineer-read-only")
    finally:
        context.close()
