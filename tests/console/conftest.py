"""One room for the console tests: the simulator process, Orthanc (RIS and PACS) and `dxgate run`,
calibrated once; and Debian's Chromium driven by Playwright (never `playwright install`).

Module-scoped so the browser tests share one start-up (the suite's time budget is ~60 s).
Screenshots go to $DXGATE_ARTIFACTS/console when set (CI keeps them), else to the test's tmp dir.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config import (
    ApiConfig,
    CalibrationConfig,
    Config,
    DestinationConfig,
    DetectorConfig,
    GeneratorConfig,
    ReviewConfig,
    ServiceConfig,
    SpoolConfig,
    WorklistConfig,
    to_toml,
)
from gateway.peers import make_worklist_entry, worklist_file_bytes
from tests.peers import Orthanc, free_port, in_ci, require
from tests.service.processes import DaemonProcess, SimProcess, add_user, calibrate, login, until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# Canary patient: none of it may be on the log-in page or in the daemon's log.
PATIENT = "Canary^Wilhelmina"
PATIENT_ID = "PIDCANARY77"
ACCESSION = "ACCCANARY1"
BIRTH = "19610203"
OTHER_ACCESSION = "ACCOTHER2"
OTHER_PATIENT = "Other^Person"
# Text from the RIS that is markup: the console must show it as text, never run it.
MARKUP_PATIENT = "Mark<b>Bold</b>^Up<i>"  # ("=" separates PN component groups: no attributes)


@dataclass
class Room:
    sim: SimProcess
    orthanc: Orthanc
    daemon: DaemonProcess
    base: str
    artifacts: Path

    def shot(self, page: Any, name: str) -> None:
        page.screenshot(path=str(self.artifacts / f"{name}.png"))


def _worklist(orthanc: Orthanc) -> None:
    now = datetime.now(UTC)
    for n, (name, pid, acc, birth, sex, desc) in enumerate(((PATIENT, PATIENT_ID, ACCESSION, BIRTH, "F", "Chest PA"),
                                                            (OTHER_PATIENT, "PIDOTHER", OTHER_ACCESSION, "19900101",
                                                             "M", "Hand"),
                                                            (MARKUP_PATIENT, "PIDMARKUP", "ACCMARKUP3", "19700101",
                                                             "O", "Skull"))):
        (orthanc.worklist_dir / f"{acc}.wl").write_bytes(worklist_file_bytes(make_worklist_entry(
            patient_name=name, patient_id=pid, birth_date=birth, sex=sex, accession=acc,
            study_uid=f"1.2.826.0.1.3680043.10.999.77{n}", requested_procedure_id="RP1",
            sps_id="SPS1", sps_description=desc, station_ae="DXGATE", start=now)))


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    root = tmp_path_factory.mktemp("console")
    artifacts = Path(os.environ["DXGATE_ARTIFACTS"]) / "console" if os.environ.get("DXGATE_ARTIFACTS") \
        else root / "screens"
    artifacts.mkdir(parents=True, exist_ok=True)
    orthanc = Orthanc(root / "orthanc").start()
    sim: SimProcess | None = None
    daemon: DaemonProcess | None = None
    try:
        _worklist(orthanc)
        sim = SimProcess(root / "sim").start("--seed", "7")
        config, api_port = root / "dxgate.toml", free_port()
        config.write_text(to_toml(Config(
            state_dir=str(root / "state"),
            detector=DetectorConfig(mode="8x8", usb_backend="socket", backend_options={"path": sim.info["usb_socket"]}),
            generator=GeneratorConfig(port=sim.info["generator_port"]),
            calibration=CalibrationConfig(dark_frames=4, flat_frames=4),
            worklist=WorklistConfig(port=orthanc.dicom_port, called_ae=orthanc.aet, timeout_s=5.0),
            spool=SpoolConfig(min_free_mb=0), api=ApiConfig(port=api_port),
            service=ServiceConfig(stop_timeout_s=8),  # the stop bound, short: see the last test
            review=ReviewConfig(hold_s=0),  # sent at once: the flow reads each image's EI back from Orthanc
            # "offline": an archive that is down (nothing listens), so the queue has pending work
            destinations=(DestinationConfig(name="orthanc", port=orthanc.dicom_port, called_ae=orthanc.aet),
                          DestinationConfig(name="offline", port=free_port(), called_ae="OFFLINE")))))
        for name, role in (("tina", "technologist"), ("eric", "engineer"), ("ada", "admin")):
            add_user(config, name, role)
        daemon = DaemonProcess(config, api_port, root).start()
        with daemon.client() as eng:
            calibrate(eng, login(eng, "eric"), sim)
        yield Room(sim=sim, orthanc=orthanc, daemon=daemon, base=f"http://127.0.0.1:{api_port}", artifacts=artifacts)
        journal = daemon.journal()
        for canary in (PATIENT, "Canary", PATIENT_ID, ACCESSION, BIRTH):
            assert canary not in journal, f"patient data {canary!r} in the daemon's log"
    finally:
        if daemon is not None and daemon.proc is not None:
            daemon.stop()
        if sim is not None:
            sim.stop()
        orthanc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        msg = "Python playwright is not installed (pip install -e '.[test]')"
        if in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    executable = require(CHROMIUM)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def wait_archived(orthanc: Orthanc, uid: str) -> dict[str, Any]:
    """The archive's own view of an instance (its tags), once it has it."""
    oid = until(lambda: orthanc.find_instance(uid), timeout_s=30, what=f"instance {uid} in Orthanc")
    tags: dict[str, Any] = orthanc.rest(f"/instances/{oid}/simplified-tags")
    return tags
